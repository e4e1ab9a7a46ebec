import ArgumentParser
import FerryClient
import FerryTransport

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: localized("List the files in the server's library.")
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "The most entries to accept from the server; a longer listing is an error.")
    var maxEntries = FerryConnection.defaultMaximumListingEntries

    @Flag(help: "Print a JSON array of {\"name\", \"size\", \"modified\"} (size in bytes, modified in RFC 3339).")
    var json = false

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            // LIST goes out with the greeting: a round trip less.
            let entries = try await client.withConnection(sendingEarly: .list) { connection, sent in
                try await connection.list(maximumEntries: self.maxEntries, alreadyRequested: sent)
            }
            if self.json {
                ListingFormatter.json(entries, emit: Terminal.writeOutput)
            } else {
                ListingFormatter.table(entries, emit: Terminal.writeOutput)
            }
        }
    }
}
