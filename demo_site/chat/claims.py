"""The demo's ``CLAIMS_BUILDER``: who the user is, plus what the bank knows about them.

``userData`` is what the demo bot answers "my plan" / "my account" from;
``agentData`` fills the agent page's Visitor Details card (one item of each
of several display types). Real sites would read both from their own
models; the demo keeps a small table per demo login (see ``demo_setup``).
"""

from __future__ import annotations

from typing import Any

#: username -> (crmID, userData, agentData)
PROFILES: dict[str, tuple[str, dict[str, Any], list[dict[str, Any]]]] = {
    "alice": (
        "CRM-1001",
        {"plan": "Premium", "accountNumber": "GB29 0042 1187", "customerSince": "2019-03-14"},
        [
            {"label": "Plan", "value": "Premium", "type": "status", "color": "success"},
            {"label": "Balance", "value": 4250.75, "type": "currency", "currency": "GBP"},
            {"label": "Customer since", "value": "2019-03-14", "type": "date"},
            {"label": "Branch", "value": "London Bridge"},
            {
                "label": "Statements",
                "value": "https://bank.example.com/statements/1001",
                "type": "link",
                "text": "Open statements",
            },
        ],
    ),
    "bob": (
        "CRM-1002",
        {"plan": "Basic", "accountNumber": "GB29 0042 2290", "customerSince": "2023-11-02"},
        [
            {"label": "Plan", "value": "Basic", "type": "status", "color": "secondary"},
            {"label": "Balance", "value": 312.4, "type": "currency", "currency": "GBP"},
            {"label": "Customer since", "value": "2023-11-02", "type": "date"},
            {"label": "Overdraft review", "value": "Pending", "type": "status", "color": "warning"},
            {"label": "Branch", "value": "Manchester"},
            {
                "label": "Statements",
                "value": "https://bank.example.com/statements/1002",
                "type": "link",
                "text": "Open statements",
            },
        ],
    ),
}


def demo_claims(user: Any) -> dict[str, Any]:
    """``sub`` (the user's pk), ``email`` and ``name``; ``crmID``, ``userData`` and
    ``agentData`` for the demo logins that have a profile."""
    claims: dict[str, Any] = {"sub": str(user.pk)}
    if user.email:
        claims["email"] = user.email
    name = user.get_full_name()
    if name:
        claims["name"] = name
    profile = PROFILES.get(user.get_username())
    if profile is not None:
        crm_id, user_data, agent_data = profile
        claims["crmID"] = crm_id
        claims["userData"] = dict(user_data)
        claims["agentData"] = [dict(item) for item in agent_data]
    return claims
