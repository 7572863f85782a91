"""One process, one signal: a Service, a Scheduler and a lock that stop together."""
