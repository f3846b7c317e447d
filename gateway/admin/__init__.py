"""The admin: its login and sessions (auth), what each page shows (views, charts), secrets kept off it
(redact), its templates (web), its HTML routes (routes) and its JSON API for scripts (api)."""
