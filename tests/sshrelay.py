"""ssh's ProxyCommand for the `ray up` test: pipe stdin/stdout to HOST:PORT.

Ray's launcher has no `ssh_port` setting; `auth.ssh_proxy_command` reaches an SSH server
on another port (the test's, on 127.0.0.1) the way a jump host would.
"""

import os
import socket
import sys
import threading

sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))


def upstream():
    while data := os.read(0, 1 << 16):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


threading.Thread(target=upstream, daemon=True).start()
while data := sock.recv(1 << 16):
    os.write(1, data)
