"""Reporting: the leaderboard model computed from stored runs (`model`), pre-registered claims
(`claims`), the row tables both writers share (`tables`), and the Markdown, HTML and folder
writers (`markdown`, `html`, `files`)."""
