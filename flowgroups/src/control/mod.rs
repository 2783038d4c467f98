//! Placeholder so the channel branch builds until the shm branch commits control/ (never committed here).
