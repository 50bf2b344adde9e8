import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import java.util.List;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * A MongoDB-wire server for the scheduler's tests: {@code MongoWireServer HOST PORT [H2_FILE]}.
 * Without a file the data lives in memory; with one it survives a restart of this process.
 */
public final class MongoWireServer {
    public static void main(String[] args) throws Exception {
        String host = args.length > 0 ? args[0] : "127.0.0.1";
        int port = args.length > 1 ? Integer.parseInt(args[1]) : 27017;
        MongoBackend backend = args.length > 2 ? new H2Backend(args[2]) : new MemoryBackend();
        // The Rust driver needs wire version 9 (MongoDB 4.4) or later; the server reports 8
        // unless told otherwise. Report MongoDB 5.0's wire version, 13.
        backend.version(new MongoVersion() {
            @Override
            public List<Integer> getVersionArray() {
                return List.of(5, 0, 0);
            }

            @Override
            public int getWireVersion() {
                return 13;
            }
        });
        MongoServer server = new MongoServer(backend);
        server.bind(host, port);
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow));
        System.out.println("mongo-java-server listening on " + host + ":" + port);
        Thread.currentThread().join();
    }
}
