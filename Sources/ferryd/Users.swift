import ArgumentParser
import FerryProtocol
import FerryServer
import FerryTransport

/// `ferryd users add|remove|list`: the accounts file, written by ferryd itself so that it is always well formed,
/// hashed and private.
struct Users: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users",
        abstract: "Manage the accounts clients log in with (a users file for --users).",
        subcommands: [Add.self, Remove.self, ListAccounts.self]
    )

    struct FileOption: ParsableArguments {
        @Option(help: "The users file (created by 'add' if missing; written with mode 0600).")
        var users: String
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Add an account, or change an existing one's password and permission.",
            discussion: """
                The password is asked twice on the terminal, or read as one line from standard input with \\
                --password-stdin; it is never an argument, which other users could see in the process list.
                """
        )

        @Argument(help: "The account's name: letters, digits, '.', '_', '-' or '@', at most 64.")
        var name: String

        @Option(help: "read (list, download), upload (also new files) or full (also overwrite, delete, rename).")
        var permission: PermissionArgument = .read

        @OptionGroup var file: FileOption

        @Flag(help: "Read the password as one line from standard input.")
        var passwordStdin = false

        func validate() throws {
            guard UsersFile.isValidName(self.name) else {
                throw ValidationError(
                    "'\(self.name)' is not an account name: letters, digits, '.', '_', '-' or '@', at most 64"
                )
            }
        }

        func run() throws {
            var accounts = try Self.existing(self.file.users)
            let password = try self.readPassword()
            let existed = accounts.accounts[self.name] != nil
            accounts.set(self.name, permission: self.permission.permission, password: try PasswordHash.make(password))
            try accounts.save(to: self.file.users)
            print("\(existed ? "updated" : "added") \(self.name) (\(self.permission.permission) permission)")
        }

        private func readPassword() throws -> String {
            let password: String?
            if self.passwordStdin {
                password = PasswordPrompt.line().map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
            } else {
                guard let first = PasswordPrompt.read("password for \(self.name): ") else {
                    throw ValidationError("no terminal to ask the password on: use --password-stdin")
                }
                guard PasswordPrompt.read("again: ") == first else { throw ValidationError("the passwords differ") }
                password = first
            }
            guard let password, !password.isEmpty else { throw ValidationError("the password is empty") }
            guard password.utf8.count <= ProtocolLimits.maximumCredentialLength else {
                throw ValidationError("a password may have at most \(ProtocolLimits.maximumCredentialLength) bytes")
            }
            return password
        }

        /// The file's accounts, or none if it does not exist yet.
        static func existing(_ path: String) throws -> UsersFile {
            do {
                return try UsersFile.load(from: path)
            } catch  where !Self.exists(path) {
                return UsersFile()
            }
        }

        private static func exists(_ path: String) -> Bool {
            var info = stat()
            return lstat(path, &info) == 0
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove an account.")

        @Argument(help: "The account's name.")
        var name: String

        @OptionGroup var file: FileOption

        func run() throws {
            var accounts = try UsersFile.load(from: self.file.users)
            guard accounts.remove(self.name) else { throw ValidationError("no account '\(self.name)'") }
            try accounts.save(to: self.file.users)
            print("removed \(self.name)")
        }
    }

    struct ListAccounts: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List the accounts.")

        @OptionGroup var file: FileOption

        func run() throws {
            let accounts = try UsersFile.load(from: self.file.users)
            for (name, account) in accounts.accounts.sorted(by: { $0.key < $1.key }) {
                print("\(name) \(account.permission)")
            }
        }
    }
}

/// `read`, `upload` or `full` on the command line.
enum PermissionArgument: String, ExpressibleByArgument, CaseIterable {
    case read
    case upload
    case full

    var permission: Permission {
        switch self {
        case .read: .read
        case .upload: .upload
        case .full: .full
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
