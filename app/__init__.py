"""rlhf-studio service: settings, database, auth, routes, job queue and worker."""
