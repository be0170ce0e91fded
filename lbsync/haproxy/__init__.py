"""Everything HAProxy-only: the layout of a rendered file, the runtime operations it allows,
the master CLI, confirmed reloads, server counters, and the file descriptors a file asks for."""
