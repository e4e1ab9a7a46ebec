import ArgumentParser
import FerryTransport

@main
struct Ferry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "List, download and upload files on a Ferry server.",
        discussion: """
            Without a subcommand, ferry opens an interactive shell that guides you with a menu and a prompt. \
            The subcommands are for scripts: they print results on stdout, one-line errors on stderr, and exit \
            with status 0 only on success.
            """,
        subcommands: [Shell.self, List.self, Get.self, Put.self, Remove.self, Move.self],
        defaultSubcommand: Shell.self
    )

    static func main() async {
        TransferMemory.tuneAllocator()
        await Self.main(nil)
    }
}

/// The server to talk to, shared by every subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The server's host name or address.")
    var host = "127.0.0.1"

    @Option(help: "The server's TCP port.")
    var port = 8888

    func validate() throws {
        guard (1...65_535).contains(self.port) else { throw ValidationError("--port must be between 1 and 65535") }
    }
}
