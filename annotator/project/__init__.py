"""The SQLite project: store, shares (split and merge), results, reviews."""
