# The connected-UDP example of Twisted's UDP howto, as the seeds hold it,
# in Python 3 syntax: print is a function, datagrams are bytes, and the
# (host, port) tuple is unpacked in the body. Nothing else changed:
# 192.168.1.1:1234 is the seeds' address. udpring's tests run it only
# inside a network namespace they made, where that address is a host of
# the test's own.
from twisted.internet.protocol import DatagramProtocol
from twisted.internet import reactor

class Helloer(DatagramProtocol):

    def startProtocol(self):
        host = "192.168.1.1"
        port = 1234

        self.transport.connect(host, port)
        print("now we can only send to host %s port %d" % (host, port))
        self.transport.write(b"hello") # no need for address

    def datagramReceived(self, data, addr):
        (host, port) = addr
        print("received %r from %s:%d" % (data, host, port))

    # Possibly invoked if there is no server listening on the
    # address to which we are sending.
    def connectionRefused(self):
        print("No one listening")

# 0 means any port, we don't care in this case
reactor.listenUDP(0, Helloer())
reactor.run()
