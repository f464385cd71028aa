"""Pure modules tested alone: no server, no network."""
