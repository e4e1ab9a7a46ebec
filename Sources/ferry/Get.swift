import ArgumentParser
import FerryClient

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download one or more files (or the whole library, with --all), over one connection.",
        discussion: """
            Each file is written to a temporary file beside its target and renamed only once its length and CRC-32 \
            are verified. With several names or --all, --output names a folder.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The names of the files on the server.")
    var names: [String] = []

    @Flag(help: "Download every file in the library.")
    var all = false

    @Option(
        name: [.short, .long],
        help: "Where to write the file (default: the same name in the current folder); a folder with several names."
    )
    var output: String?

    @Flag(help: "Replace local files that exist.")
    var force = false

    @Option(help: "With --all, the most entries to accept from the server's listing.")
    var maxEntries = FerryConnection.defaultMaximumListingEntries

    func validate() throws {
        guard self.names.isEmpty == self.all else {
            throw ValidationError(self.all ? "--all takes no names" : "name at least one file to download, or --all")
        }
    }

    func destination(for name: String, of count: Int) -> String {
        guard let output = self.output else { return name }
        return count == 1 && !self.all ? output : output + "/" + name
    }

    func run() async throws {
        Interruption.removePartialDownloadsOnSignal()
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            if let output = self.output, self.all || self.names.count > 1 {
                try LocalFolder.make(output)
            }
            let report = try await client.withConnection { connection in
                let names =
                    self.all ? try await connection.list(maximumEntries: self.maxEntries).map(\.name) : self.names
                let downloads = names.map {
                    FerryConnection.Download(name: $0, destination: self.destination(for: $0, of: names.count))
                }
                let report = BatchReport(labels: names, subjects: names)
                try await connection.get(downloads, overwrite: self.force, progress: report.progress) { index, result in
                    report.completed(index, result) { bytes in
                        "received \(names[index]) → \(downloads[index].destination) (\(Sizes.describe(bytes)), verified)"
                    }
                }
                return report
            }
            try report.finish("downloaded", single: !self.all && self.names.count == 1)
        }
    }
}
