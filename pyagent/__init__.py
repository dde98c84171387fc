"""Escalation policy engine for AI-assisted incident response.

The decision logic is Rego (``rego/``), evaluated by an OPA sidecar; this package
gathers the facts, asks OPA, and carries the decision out.
"""

__version__ = "0.1.0"
