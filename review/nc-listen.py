# Stand-in for `nc -l PORT > file` (nc is not installed): accept one connection,
# write every byte received to stdout, never answer; exits after IDLE seconds of silence.
import socket, sys
port = int(sys.argv[1]); idle = float(sys.argv[2]) if len(sys.argv) > 2 else 3
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', port)); s.listen(1)
c, _ = s.accept(); c.settimeout(idle)
try:
    while True:
        b = c.recv(65536)
        if not b: break
        sys.stdout.buffer.write(b); sys.stdout.flush()
except socket.timeout:
    pass
