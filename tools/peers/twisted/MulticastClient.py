# The multicast ping-pong client of Twisted's UDP howto
# (listings/udp/MulticastClient.py), as the seeds hold it, in Python 3
# syntax: print is a function and datagrams are bytes. Nothing else
# changed. udpring's tests run it as a peer.
from twisted.internet.protocol import DatagramProtocol
from twisted.internet import reactor


class MulticastPingClient(DatagramProtocol):

    def startProtocol(self):
        # Join the multicast address, so we can receive replies:
        self.transport.joinGroup("228.0.0.5")
        # Send to 228.0.0.5:8005 - all listeners on the multicast address
        # (including us) will receive this message.
        self.transport.write(b'Client: Ping', ("228.0.0.5", 8005))

    def datagramReceived(self, datagram, address):
        print("Datagram %s received from %s" % (repr(datagram), repr(address)))


reactor.listenMulticast(8005, MulticastPingClient(), listenMultiple=True)
reactor.run()
