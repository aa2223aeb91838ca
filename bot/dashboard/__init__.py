"""The care team's dashboard: ``/dashboard`` (login required on every route).

* ``auth``   sign in / out, the logged-in user on ``g.user``, ``admin_required``
* ``views``  queue (+ JSON poll, CSV export), escalation detail (acknowledge, resolve),
             patient registry, overview, audit log
* ``data``   what the pages show, computed from the store (no Flask)
"""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static")

from . import auth, views  # noqa: E402  (routes register themselves on bp)

__all__ = ["auth", "bp", "views"]
