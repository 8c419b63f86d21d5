using System.Net;
using System.Net.Sockets;

namespace PgBackup.Testing;

/// <summary>Hands out currently free TCP ports on 127.0.0.1, never the same one twice per process.</summary>
public static class FreePort
{
    static readonly HashSet<int> handedOut = [];

    public static int Next()
    {
        lock (handedOut)
        {
            for (var attempt = 0; attempt < 1000; attempt++)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                var port = ((IPEndPoint)listener.LocalEndpoint).Port;
                listener.Stop();
                if (handedOut.Add(port)) return port;
            }
            throw new InvalidOperationException("Could not find a TCP port that was not already handed out.");
        }
    }
}
