"""Security headers of every response, set in one place (``app.on_response_prepare``).

Every response -- API JSON, the web client, its assets, signed object
downloads, errors produced by aiohttp itself -- passes through
:func:`secure_headers` just before its headers are sent, so no route can
forget them:

* ``X-Content-Type-Options: nosniff``: a stored upload is never sniffed into
  HTML or script by the browser.
* ``Referrer-Policy: no-referrer``: signed URLs and case ids stay out of
  other sites' logs.
* ``Content-Security-Policy``: scripts, styles, workers, media and
  connections only from this origin (the web client is self-hosted; no CDN),
  ``blob:`` for camera snapshots and rendered previews, no plugins, no
  ``<base>`` rewriting, framing only by this origin (``frame-ancestors``,
  with ``X-Frame-Options: SAMEORIGIN`` for older browsers).  Element Plus
  sets inline ``style`` attributes, hence ``'unsafe-inline'`` for styles
  only; scripts have no such exception.
* ``Cache-Control: no-store`` on ``/api/`` answers that did not choose their
  own caching: tokens, case details with an unmasked ID number.
* ``Server: CloudWindow``: no library or Python version for a scanner.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "secure_headers"]

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    )
)

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Server": "CloudWindow",
}


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _ALWAYS.items():
        response.headers[name] = value
    if request.path.startswith("/api/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
