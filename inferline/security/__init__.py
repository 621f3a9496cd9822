"""Who may call the server, what they may do, and how often.

``principals`` (who is calling, role grants), ``keys`` (API keys in the
registry database), ``tokens`` (JWT from an identity provider), ``policy`` (the
one table of the role each route and RPC needs), ``ratelimit`` (token buckets)
and ``guard`` (the one check REST and both gRPC engines call).
"""

from inferline.security.guard import Guard
from inferline.security.policy import Rule, rest_rule, rpc_rule
from inferline.security.principals import ANONYMOUS, Principal

__all__ = ["ANONYMOUS", "Guard", "Principal", "Rule", "rest_rule", "rpc_rule"]
