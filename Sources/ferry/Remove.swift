import ArgumentParser
import FerryClient
import FerryTransport

struct Remove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: localized("Delete one or more files from the server's library (needs full permission).")
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The names of the files on the server.")
    var names: [String]

    func validate() throws {
        guard !self.names.isEmpty else { throw ValidationError("name at least one file to delete") }
    }

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            let report = BatchReport(labels: self.names, subjects: self.names)
            try await client.withConnection { connection in
                for (index, name) in self.names.enumerated() {
                    let result: Result<UInt64, FerryClientError>
                    do {
                        try await connection.delete(name)
                        result = .success(0)
                    } catch let error as FerryClientError {
                        result = .failure(error)
                    }
                    report.completed(index, result) { _ in localized("deleted %@", name) }
                }
            }
            try report.finish(.deleted, single: self.names.count == 1)
        }
    }
}

struct Move: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mv",
        abstract: localized("Rename a file in the server's library (needs full permission)."),
        discussion: "An existing file of the new name is kept unless --overwrite is given."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "The file's name on the server.")
    var from: String

    @Argument(help: "Its new name.")
    var to: String

    @Flag(help: "Replace a file that already has the new name.")
    var overwrite = false

    func run() async throws {
        try await Failure.exitOnFailure {
            let client = try self.connection.client()
            try await client.withConnection { try await $0.rename(self.from, to: self.to, overwrite: self.overwrite) }
            print(localized("renamed %@ → %@", self.from, self.to))
        }
    }
}
