"""The configuration and what every layer shares: typed config, CLI, types, figures, report, statistics."""
