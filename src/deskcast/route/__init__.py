"""The one-word switch: ``deskcast route local|web|none|HOST[:PORT]…``.

A per-user daemon (:mod:`deskcast.route.daemon`) owns the hub and the *legs* that read the hub's
monitor (:mod:`deskcast.route.legs`); the CLI is a thin client (:mod:`deskcast.route.client`)
speaking JSON lines over a Unix socket (:mod:`deskcast.route.protocol`). Applications always
play into the hub, so switching never touches them: only what reads the hub changes.
"""
