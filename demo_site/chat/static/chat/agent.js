/*
 * The live agent page. Plain JavaScript, no build step.
 *
 * Opens the agent socket (data-ws-url; the staff login's session cookie
 * authenticates it, no chat token), shows each visitor message as it arrives
 * (in the open conversation, and as a count in the list), and sends replies
 * over the socket: {"type": "reply", "conversation": {...}, "text": ...}.
 * While the socket is down the reply form posts as a plain form; after a drop
 * it reconnects with capped, jittered exponential backoff. Everything from the
 * server is shown as text, never as markup.
 */
(function () {
  "use strict";

  var BACKOFF_BASE_MS = 1000;
  var BACKOFF_CAP_MS = 30000;
  var CLOSE_NOT_STAFF = 4403;

  function AgentPage(root) {
    this.root = root;
    this.url = root.dataset.wsUrl || "";
    this.status = root.querySelector("[data-agent-live]");
    this.rows = root.querySelector("table.conversations tbody");
    this.section = root.querySelector("section.conversation");
    this.log = root.querySelector("[data-agent-log]");
    this.errorBox = root.querySelector("[data-agent-error]");
    this.form = root.querySelector("form[data-agent-reply]");
    this.socket = null;
    this.attempts = 0;
    this.selected = this.section
      ? { user_id: this.section.dataset.userId, anonymous: this.section.dataset.anonymous === "true" }
      : null;
  }

  AgentPage.prototype.start = function () {
    var self = this;
    if (this.form) {
      this.form.addEventListener("submit", function (event) {
        if (self.reply()) event.preventDefault(); // else the form posts as before
      });
    }
    if (this.url && typeof window.WebSocket === "function") this.connect();
  };

  AgentPage.prototype.setStatus = function (state, text) {
    this.root.dataset.socket = state;
    if (!this.status) return;
    this.status.dataset.state = state;
    this.status.textContent = text;
  };

  AgentPage.prototype.connect = function () {
    var self = this;
    var url = new URL(this.url, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    var socket;
    try {
      socket = new window.WebSocket(url.href);
    } catch (e) {
      return this.setStatus("off", "Live updates are unavailable: reload for new messages.");
    }
    this.socket = socket;
    this.setStatus("connecting", "Connecting to the live chat…");
    socket.onopen = function () {
      self.attempts = 0;
      self.setStatus("open", "Live: new messages appear as they arrive.");
    };
    socket.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame && frame.type === "message") self.receive(frame);
      else if (frame && frame.type === "error") self.showError(frame);
    };
    socket.onclose = function (event) {
      self.socket = null;
      if (event.code === CLOSE_NOT_STAFF) {
        return self.setStatus("closed", "Live updates need a staff login: log in again.");
      }
      self.reconnect();
    };
  };

  AgentPage.prototype.reconnect = function () {
    var self = this;
    var ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, this.attempts));
    var delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempts += 1;
    this.setStatus("reconnecting", "Live chat interrupted; reconnecting…");
    window.setTimeout(function () { self.connect(); }, delay);
  };

  // Sends the reply over the socket; false when the socket is not open.
  AgentPage.prototype.reply = function () {
    if (!this.socket || this.socket.readyState !== 1 || !this.selected) return false;
    var textarea = this.form.querySelector("textarea");
    var text = textarea.value.trim();
    if (!text) return true;
    this.socket.send(JSON.stringify({ type: "reply", conversation: this.selected, text: text }));
    textarea.value = "";
    this.clearError();
    return true;
  };

  AgentPage.prototype.receive = function (frame) {
    var conversation = frame.conversation;
    var message = frame.message;
    if (!conversation || !message) return;
    var open = this.selected && this.selected.user_id === conversation.user_id &&
      this.selected.anonymous === conversation.anonymous;
    if (open) this.append(message, frame.author);
    this.touchRow(conversation, message, !open);
  };

  function clock(iso) {
    return typeof iso === "string" ? iso.slice(11, 16) : "";
  }

  AgentPage.prototype.append = function (message, author) {
    if (!this.log || this.log.querySelector('[data-message-id="' + Number(message.id) + '"]')) return;
    var item = document.createElement("li");
    item.className = "chat-msg chat-msg--" + (/^(user|agent|bot)$/.test(message.sender) ? message.sender : "user");
    item.dataset.messageId = String(message.id);
    var text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = message.text;
    var time = document.createElement("time");
    time.dateTime = message.created_at || "";
    time.textContent = clock(message.created_at);
    item.appendChild(text);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(time);
    if (author) item.appendChild(document.createTextNode(" · " + author));
    this.log.appendChild(item);
    item.scrollIntoView({ block: "nearest" });
  };

  AgentPage.prototype.findRow = function (conversation) {
    var rows = this.rows ? this.rows.querySelectorAll("tr[data-user-id]") : [];
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.userId === conversation.user_id &&
          rows[i].dataset.anonymous === String(conversation.anonymous)) return rows[i];
    }
    return null;
  };

  AgentPage.prototype.newRow = function (conversation) {
    var row = document.createElement("tr");
    row.dataset.userId = conversation.user_id;
    row.dataset.anonymous = String(conversation.anonymous);
    var who = document.createElement("td");
    var link = document.createElement("a");
    link.className = "user-id";
    link.href = "?" + new URLSearchParams({
      user: conversation.user_id, anonymous: conversation.anonymous ? "1" : "0"
    }).toString();
    link.textContent = conversation.user_id || "(no id)";
    who.appendChild(link);
    var identity = document.createElement("td");
    var badge = document.createElement("span");
    badge.className = "badge " + (conversation.anonymous ? "anon" : "verified");
    badge.textContent = conversation.anonymous ? "anonymous" : "verified";
    identity.appendChild(badge);
    var count = document.createElement("td");
    count.dataset.count = "";
    count.textContent = "0";
    var last = document.createElement("td");
    last.dataset.last = "";
    row.appendChild(who);
    row.appendChild(identity);
    row.appendChild(count);
    row.appendChild(last);
    var empty = this.rows.querySelector("tr[data-empty]");
    if (empty) empty.remove();
    return row;
  };

  // The conversation moves to the top of the list with its new count and time.
  AgentPage.prototype.touchRow = function (conversation, message, unread) {
    if (!this.rows) return;
    var row = this.findRow(conversation) || this.newRow(conversation);
    var count = row.querySelector("[data-count]");
    count.textContent = String((parseInt(count.textContent, 10) || 0) + 1);
    var iso = message.created_at || "";
    row.querySelector("[data-last]").textContent = iso ? iso.slice(0, 10) + " " + clock(iso) : "";
    if (unread) row.classList.add("fresh");
    this.rows.insertBefore(row, this.rows.firstChild);
  };

  AgentPage.prototype.showError = function (frame) {
    if (!this.errorBox) return;
    this.errorBox.textContent = frame.detail || frame.error || "Something went wrong.";
    this.errorBox.hidden = false;
  };

  AgentPage.prototype.clearError = function () {
    if (!this.errorBox) return;
    this.errorBox.textContent = "";
    this.errorBox.hidden = true;
  };

  function init() {
    var root = document.getElementById("agent-page");
    if (!root || root.dataset.started) return;
    root.dataset.started = "true";
    window.agentPage = new AgentPage(root);
    window.agentPage.start();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
