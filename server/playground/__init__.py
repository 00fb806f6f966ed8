"""The playground: a static chat page (HTML, JS, CSS; no build step, nothing from a CDN)."""
