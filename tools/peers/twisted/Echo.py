# The echo server of Twisted's UDP howto, as the seeds hold it, in Python 3
# syntax: print is a function, and the (host, port) tuple is unpacked in
# the body (Python 3 has no tuple parameters). Nothing else changed.
# udpring's tests run it as a peer.
from twisted.internet.protocol import DatagramProtocol
from twisted.internet import reactor

class Echo(DatagramProtocol):

    def datagramReceived(self, data, addr):
        (host, port) = addr
        print("received %r from %s:%d" % (data, host, port))
        self.transport.write(data, (host, port))

reactor.listenUDP(9999, Echo())
reactor.run()
