// The connection a request came on, found by its peer's address and port. cpp-httplib 0.11
// (Debian 12) gives a handler no socket, so without this a non-streaming request could not
// notice its client leave while it waits for its text. Linux only: it scans /proc/self/fd;
// elsewhere, or when no socket matches, find_client_socket returns -1. The socket stays
// owned by cpp-httplib (open for as long as the handler runs); it is only polled here.
#pragma once
#include <string>

namespace moepp {

int find_client_socket(const std::string& peer_ip, int peer_port);

// Whether the peer has closed the connection (hang-up, error, or its end shut), looked at
// without reading or waiting. A client that half-closes after sending its request counts
// as gone.
bool client_gone(int fd);

}  // namespace moepp
