"""The hub's moderation loop, service side: what was scanned (:mod:`.history`),
cases and decisions (:mod:`.cases`), moderators (:mod:`.moderators`), the
durable outbox of events (:mod:`.events`), all in one SQLite database beside
the index (:mod:`.db`)."""
