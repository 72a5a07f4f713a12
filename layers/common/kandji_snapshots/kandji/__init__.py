"""The Kandji (Iru) API adapter: URL and token validation (config), the HTTP client with paging, retries,
errors that say what to fix and rate-limit headers (client), the one limiter all workers share (rate_limiter),
and what each endpoint needs on the token (permissions)."""
