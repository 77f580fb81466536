//! `TCP_NODELAY` on the database connections. sqlx 0.9.0 opens its TCP
//! connections without it (upstream transact-rs/sqlx#4335, fixed by #4336,
//! unreleased at the time of writing), so a message that spans two TCP
//! segments, or two TLS records, waits up to 40 ms for the server's
//! delayed ACK: a 100,000-key import took 9.7 s over TLS instead of 0.8 s,
//! and a batch's multi-row statement paid it nearly every time.
//!
//! sqlx gives no access to its socket, so each new connection's hook sets
//! the option on every socket the process has open: the connection just
//! made is among them. For the others it is harmless (allot's HTTP
//! sockets set it already; a Unix socket or a file refuses it, which is
//! ignored). Remove this once a sqlx release sets it again.

/// Sets `TCP_NODELAY` on every socket of this process (Linux; elsewhere
/// nothing is done).
pub(super) fn set_on_every_socket() {
    #[cfg(target_os = "linux")]
    {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in fds.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            let on: libc::c_int = 1;
            // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a
            // live local. Should `fd` have been closed or reused meanwhile,
            // the call fails (EBADF, ENOTSOCK, EOPNOTSUPP) or sets the
            // option on another socket, both harmless; errors are ignored.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}
