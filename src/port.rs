//! Choosing a port: candidates in the configured order, a check that a port is really free,
//! and the bind that becomes the handed-over socket.
