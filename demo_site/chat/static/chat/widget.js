/*
 * The demo chat widget. Plain JavaScript, no build step.
 *
 * Reads the identity token the page put in window[<data-variable>] (default
 * ConvrsUser) and keeps one WebSocket open (data-ws-url, SPEC §10): the token
 * travels as a subprotocol, new WebSocket(url, ["chat-security", token]),
 * never in the URL. At the server's refresh_at (or on "token_expiring") it
 * fetches a fresh token from the token endpoint and sends it in band,
 * {"type": "identify", "token": ...}, without reconnecting. After a drop it
 * reconnects with capped, jittered exponential backoff; after a 4401 close
 * only for "expired", with a fresh token. Anonymous visitors (security off)
 * connect without a token.
 *
 * Where no WebSocket can be opened, it uses the HTTP chat API instead: the
 * token as "Authorization: Bearer", history polling, and on an "expired"
 * answer one refresh and retry, so the person chatting never notices.
 * The history always comes over HTTP. Logging out first destroys the chat
 * session, then submits the site's logout.
 */
(function () {
  "use strict";

  // Answers after which a fresh token from the site is worth one retry.
  var RETRY_AFTER_REFRESH = ["expired", "key_retired", "token_revoked", "missing_token"];
  var MIN_REFRESH_DELAY_MS = 5000;
  var MAX_TIMER_MS = 2147483647; // setTimeout's limit (~24.8 days)
  var SUBPROTOCOL = "chat-security";
  var BACKOFF_BASE_MS = 1000;
  var BACKOFF_CAP_MS = 30000;
  var CLOSE_REFUSED = 4401; // the reason is the error code; "expired" is worth a new token
  var CLOSE_PROTOCOL_ERROR = 4400; // a bug on this side: reconnecting would repeat it

  function decodeClaims(token) {
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (part.length % 4) part += "=";
      return JSON.parse(atob(part));
    } catch (e) {
      return null;
    }
  }

  // Without a token the API acts on this browser's cookies, so it wants the
  // site's CSRF token like any form (the page's own, else the cookie).
  function csrfToken() {
    var field = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (field && field.value) return field.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function ChatWidget(root) {
    this.root = root;
    this.messagesUrl = root.dataset.messagesUrl;
    this.logoutUrl = root.dataset.logoutUrl;
    this.tokenUrl = root.dataset.tokenUrl || "";
    this.variable = root.dataset.variable || "ConvrsUser";
    this.pollMs = (parseFloat(root.dataset.pollSeconds) || 0) * 1000;
    this.log = root.querySelector("[data-chat-log]");
    this.errorBox = root.querySelector("[data-chat-error]");
    this.status = root.querySelector("[data-chat-status]");
    this.form = root.querySelector("[data-chat-form]");
    this.input = this.form.querySelector("textarea");
    this.seen = {};
    this.skewMs = 0; // server clock minus this browser's clock, from the Date header
    this.refreshTimer = null;
    this.refreshing = null;
    var token = window[this.variable];
    this.token = typeof token === "string" && token ? token : null;
    // -- the live connection
    this.wsUrl = root.dataset.wsUrl || "";
    this.socket = null;
    this.live = false; // a socket is open and identified: messages go over it
    this.everOpened = false;
    this.wsFailed = false; // no WebSocket here (or given up): the HTTP API only
    this.attempts = 0;
    this.reconnectTimer = null;
    this.reconnecting = false;
    this.pollTimer = null;
    this.stopped = false;
    this.lastError = null; // the error frame the server sends before it closes
    this.identifiedCount = 0;
  }

  ChatWidget.prototype.start = function () {
    var self = this;
    this.form.addEventListener("submit", function (event) {
      event.preventDefault();
      self.send();
    });
    this.input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        self.send();
      }
    });
    document.querySelectorAll("form[data-chat-logout]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        self.logout().then(function () { form.submit(); });
      });
    });
    var ready = this.token || !this.tokenUrl ? Promise.resolve() : this.refreshToken();
    return ready
      .then(function () { return self.loadHistory(); })
      .then(function () {
        self.scheduleFromToken();
        if (!self.connect()) self.fallBack();
        self.root.dataset.state = "ready";
      });
  };

  ChatWidget.prototype.startPolling = function () {
    var self = this;
    if (this.pollMs <= 0 || this.pollTimer) return;
    this.pollTimer = window.setInterval(function () {
      if (document.visibilityState === "visible") self.loadHistory();
    }, this.pollMs);
  };

  ChatWidget.prototype.stopPolling = function () {
    window.clearInterval(this.pollTimer);
    this.pollTimer = null;
  };

  // -- tokens ------------------------------------------------------------------

  ChatWidget.prototype.noteServerTime = function (response) {
    var date = Date.parse(response.headers.get("Date") || "");
    if (!isNaN(date)) this.skewMs = date - Date.now();
  };

  ChatWidget.prototype.scheduleRefresh = function (refreshAtSeconds) {
    if (!this.tokenUrl || typeof refreshAtSeconds !== "number") return;
    var self = this;
    var delay = refreshAtSeconds * 1000 - (Date.now() + this.skewMs);
    delay = Math.min(Math.max(delay, MIN_REFRESH_DELAY_MS), MAX_TIMER_MS);
    window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(function () { self.refreshToken(); }, delay);
  };

  ChatWidget.prototype.scheduleFromToken = function () {
    var claims = this.token ? decodeClaims(this.token) : null;
    if (claims && typeof claims.exp === "number" && typeof claims.iat === "number") {
      this.scheduleRefresh(claims.iat + 0.75 * (claims.exp - claims.iat));
    }
  };

  // One refresh at a time; resolves true when a new token is in hand.
  ChatWidget.prototype.refreshToken = function () {
    var self = this;
    if (!this.tokenUrl) return Promise.resolve(false);
    if (this.refreshing) return this.refreshing;
    this.refreshing = fetch(this.tokenUrl, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" }
    })
      .then(function (response) {
        self.noteServerTime(response);
        if (!response.ok) return null;
        return response.json();
      })
      .then(function (data) {
        if (!data || typeof data.token !== "string") return false;
        self.token = data.token;
        window[self.variable] = data.token;
        self.scheduleRefresh(data.refresh_at);
        self.identifyInBand();
        return true;
      })
      .catch(function () { return false; })
      .then(function (ok) {
        self.refreshing = null;
        return ok;
      });
    return this.refreshing;
  };

  // -- the WebSocket -------------------------------------------------------------

  ChatWidget.prototype.socketUrl = function () {
    var url = new URL(this.wsUrl, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  };

  // Opens a socket; false when this page cannot have one (then the HTTP API it is).
  ChatWidget.prototype.connect = function () {
    if (this.stopped || this.wsFailed || !this.wsUrl || typeof window.WebSocket !== "function") {
      return false;
    }
    var self = this;
    var socket;
    var identifyOnOpen = false;
    try {
      socket = new window.WebSocket(
        this.socketUrl(), this.token ? [SUBPROTOCOL, this.token] : [SUBPROTOCOL]);
    } catch (e) {
      try { // a token this browser refuses as a subprotocol goes in an identify message
        socket = new window.WebSocket(this.socketUrl(), [SUBPROTOCOL]);
        identifyOnOpen = !!this.token;
      } catch (e2) {
        return false;
      }
    }
    this.socket = socket;
    this.root.dataset.socket = "connecting";
    socket.onopen = function () {
      self.everOpened = true;
      if (identifyOnOpen) socket.send(JSON.stringify({ type: "identify", token: self.token }));
    };
    socket.onmessage = function (event) {
      if (socket === self.socket) self.onFrame(event.data);
    };
    socket.onclose = function (event) {
      if (socket === self.socket) self.onClose(event);
    };
    return true;
  };

  ChatWidget.prototype.onFrame = function (data) {
    var frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "identified") {
      this.live = true;
      this.attempts = 0;
      this.identifiedCount += 1;
      this.root.dataset.socket = "open";
      this.root.dataset.transport = "websocket";
      this.root.dataset.identified = String(this.identifiedCount);
      this.stopPolling();
      this.showUser(frame.user);
      this.clearError();
      this.scheduleRefresh(frame.refresh_at);
      if (this.reconnecting) { // catch up with what was said while the socket was down
        this.reconnecting = false;
        this.loadHistory();
      }
    } else if (frame.type === "token_expiring") {
      this.refreshToken();
    } else if (frame.type === "message") {
      this.append(frame.message);
    } else if (frame.type === "error") {
      this.lastError = frame;
      if (frame.error !== "expired") this.showError(frame);
    }
  };

  // The renewal in band: the same socket, a new token (no reconnect).
  ChatWidget.prototype.identifyInBand = function () {
    if (this.live && this.socket && this.socket.readyState === 1 && this.token) {
      this.socket.send(JSON.stringify({ type: "identify", token: this.token }));
    }
  };

  ChatWidget.prototype.onClose = function (event) {
    var self = this;
    var reason = event.reason || (this.lastError && this.lastError.error) || "";
    this.socket = null;
    this.live = false;
    this.lastError = null;
    this.root.dataset.socket = "closed";
    if (this.stopped) return;
    if (!this.everOpened) return this.fallBack(); // no WebSocket on this server or network
    if (event.code === CLOSE_REFUSED && reason === "expired") {
      this.refreshToken().then(function (ok) {
        if (!ok || !self.connect()) self.fallBack();
      });
    } else if (event.code === CLOSE_REFUSED || event.code === CLOSE_PROTOCOL_ERROR) {
      this.fallBack(); // refused: the HTTP API shows why, and refreshes where that helps
    } else {
      this.scheduleReconnect();
    }
  };

  ChatWidget.prototype.scheduleReconnect = function () {
    var self = this;
    var ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, this.attempts));
    var delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: no reconnect storms
    this.attempts += 1;
    this.reconnecting = true;
    this.root.dataset.socket = "reconnecting";
    window.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = window.setTimeout(function () {
      if (!self.connect()) self.fallBack();
    }, delay);
  };

  ChatWidget.prototype.fallBack = function () {
    this.wsFailed = true;
    this.root.dataset.transport = "http";
    this.startPolling();
  };

  // -- the chat API --------------------------------------------------------------

  ChatWidget.prototype.request = function (method, url, body, retried) {
    var self = this;
    var headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = "Bearer " + this.token;
    else if (method !== "GET" && csrfToken()) headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method: method,
      headers: headers,
      credentials: "same-origin",
      cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (response) {
      self.noteServerTime(response);
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401 && !retried && RETRY_AFTER_REFRESH.indexOf(data.error) >= 0) {
          return self.refreshToken().then(function (ok) {
            return ok ? self.request(method, url, body, true) : { response: response, data: data };
          });
        }
        return { response: response, data: data };
      });
    });
  };

  ChatWidget.prototype.loadHistory = function () {
    var self = this;
    return this.request("GET", this.messagesUrl).then(function (result) {
      if (!result.response.ok) return self.showError(result.data);
      self.showUser(result.data.user);
      (result.data.messages || []).forEach(function (m) { self.append(m); });
      self.clearError();
    }).catch(function () { self.showError({ detail: "The chat is offline." }); });
  };

  ChatWidget.prototype.send = function () {
    var self = this;
    var text = this.input.value.trim();
    if (!text) return Promise.resolve();
    if (this.live && this.socket && this.socket.readyState === 1) {
      // The message comes back over the socket, stored, like on every other device.
      this.socket.send(JSON.stringify({ type: "message", text: text }));
      this.input.value = "";
      this.clearError();
      return Promise.resolve();
    }
    this.input.disabled = true;
    return this.request("POST", this.messagesUrl, { text: text })
      .then(function (result) {
        if (result.response.status !== 201) return self.showError(result.data);
        self.input.value = "";
        self.showUser(result.data.user);
        self.append(result.data.message);
        self.clearError();
      })
      .catch(function () { self.showError({ detail: "The message could not be sent." }); })
      .then(function () {
        self.input.disabled = false;
        self.input.focus();
      });
  };

  ChatWidget.prototype.logout = function () {
    var self = this;
    this.stopped = true;
    window.clearTimeout(this.refreshTimer);
    window.clearTimeout(this.reconnectTimer);
    this.stopPolling();
    if (this.socket) this.socket.close(1000);
    var done = function () {
      self.token = null;
      window[self.variable] = undefined;
      self.log.textContent = "";
      self.seen = {};
    };
    if (!this.logoutUrl) return Promise.resolve(done());
    return this.request("POST", this.logoutUrl).catch(function () {}).then(done);
  };

  // -- rendering (text only: nothing from the server becomes markup) ----------------

  var SENDERS = { user: "user", agent: "agent", bot: "bot" };

  // Kept messages in id order (a reconnect's history may fill a gap); a greeting
  // (no id: said to one connection, not kept) once per page.
  ChatWidget.prototype.append = function (message) {
    if (!message) return;
    var kept = typeof message.id === "number";
    var key = kept ? message.id : "greeting";
    if (this.seen[key]) return;
    this.seen[key] = true;
    var item = document.createElement("li");
    item.className = "chat-msg chat-msg--" + (SENDERS[message.sender] || "user");
    if (kept) item.dataset.messageId = String(message.id);
    var text = document.createElement("span");
    text.className = "chat-text";
    text.textContent = message.text;
    var time = document.createElement("time");
    var when = new Date(message.created_at || Date.now());
    if (!isNaN(when)) {
      time.dateTime = when.toISOString();
      time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
    item.appendChild(text);
    item.appendChild(time);
    var later = null;
    if (kept) {
      var items = this.log.querySelectorAll("[data-message-id]");
      for (var i = 0; i < items.length && !later; i++) {
        if (Number(items[i].dataset.messageId) > message.id) later = items[i];
      }
    }
    this.log.insertBefore(item, later);
    this.log.scrollTop = this.log.scrollHeight;
  };

  ChatWidget.prototype.showUser = function (user) {
    if (!user || !this.status) return;
    this.status.textContent = user.verified ? "verified as " + user.id : "anonymous";
    this.status.dataset.verified = user.verified ? "true" : "false";
  };

  ChatWidget.prototype.showError = function (data) {
    this.errorBox.textContent = (data && (data.detail || data.error)) || "Something went wrong.";
    this.errorBox.hidden = false;
  };

  ChatWidget.prototype.clearError = function () {
    this.errorBox.textContent = "";
    this.errorBox.hidden = true;
  };

  function init() {
    var root = document.getElementById("chat-widget");
    if (!root || root.dataset.state) return;
    root.dataset.state = "starting";
    window.chatWidget = new ChatWidget(root);
    window.chatWidget.start();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
