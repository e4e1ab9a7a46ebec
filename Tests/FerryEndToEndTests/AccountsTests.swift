import FerryProtocol
import FerryServer
import Foundation
import NIOCore
import Testing

@testable import FerryClient

#if canImport(Glibc)
import Glibc
#endif

/// Accounts (protocol version 2): the users file ferryd writes, logging in, and what each account may do.
@Suite("Accounts and log-in")
struct AccountsTests {
    typealias Daemon = CommandLineTests.Daemon

    /// alice (full), uma (upload), rita (read); one hash each (scrypt is slow on purpose, so made once). Empty if
    /// hashing failed, which every log-in test then shows.
    static let accounts: UsersFile = {
        var file = UsersFile()
        for (name, permission) in [("alice", Permission.full), ("uma", .upload), ("rita", .read)] {
            guard let hash = try? PasswordHash.make("\(name)-secret") else { continue }
            file.set(name, permission: permission, password: hash)
        }
        return file
    }()

    static func configuration(anonymous: Permission? = nil, maximumLoginFailures: Int = 5) -> ServerConfiguration {
        ServerConfiguration(
            anonymousPermission: anonymous,
            users: Self.accounts,
            maximumLoginFailures: maximumLoginFailures
        )
    }

    @Test func ferrydWritesAPrivateUsersFileAndRefusesOneOthersMayWrite() async throws {
        let folder = Scratch.makeDirectory("accounts")
        let path = folder.appendingPathComponent("users").path
        let added = try await Binaries.run(
            "ferryd",
            ["users", "add", "bob", "--permission", "upload", "--users", path, "--password-stdin"],
            input: "correct horse\n"
        )
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("added bob (upload permission)"))
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("correct horse"), "only a hash is kept")
        #expect(text.contains("bob upload scrypt 15 8 1 "))
        _ = try await Binaries.run(
            "ferryd",
            ["users", "add", "eve", "--users", path, "--password-stdin"],
            input: "x\n"
        )
        let list = try await Binaries.run("ferryd", ["users", "list", "--users", path])
        #expect(list.stdout == "bob upload\neve read\n", "\(list.stdout)")
        let removed = try await Binaries.run("ferryd", ["users", "remove", "eve", "--users", path])
        #expect(removed.status == 0 && removed.stdout.contains("removed eve"))
        #expect(try UsersFile.load(from: path).accounts.keys.sorted() == ["bob"])

        chmod(path, 0o664)
        let refused = try await Binaries.run(
            "ferryd",
            ["--root", Scratch.makeDirectory("library").path, "--port", "0", "--users", path]
        )
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("may be written by others than its owner"), "\(refused.stderr)")
        let noneWithoutUsers = try await Binaries.run(
            "ferryd",
            ["--root", Scratch.makeDirectory("library").path, "--port", "0", "--anonymous", "none"]
        )
        #expect(noneWithoutUsers.status == 64 && noneWithoutUsers.stderr.contains("nobody"))
    }

    /// Without logging in a client may do nothing; with a wrong password it is refused after a delay; logged in,
    /// it has its account's level.
    @Test func loggingInGivesTheAccountsLevel() async throws {
        try await TestServer.run(configuration: Self.configuration()) { server in
            var anonymous = server.client
            do {
                _ = try await anonymous.withConnection { try await $0.list() }
                Issue.record("an anonymous client listed a server that requires a log-in")
            } catch let error as FerryClientError {
                guard case .loginRequired = error else { throw error }
            }
            anonymous.credentials = Credentials(user: "alice", password: "wrong")
            let started = ContinuousClock.now
            do {
                _ = try await anonymous.withConnection { try await $0.list() }
                Issue.record("a wrong password was accepted")
            } catch let error as FerryClientError {
                #expect(error.errorCode == .authenticationFailed, "\(error)")
            }
            #expect(ContinuousClock.now - started >= .milliseconds(250), "a failure is answered late")
            // An account that does not exist is refused the same way.
            anonymous.credentials = Credentials(user: "mallory", password: "x")
            await #expect(throws: FerryClientError.self) { try await anonymous.withConnection { try await $0.list() } }

            let scratch = Scratch.makeDirectory("client")
            try Data("new".utf8).write(to: scratch.appendingPathComponent("new"))
            try server.write("existing", Array("old".utf8))
            for (user, canUpload, canDelete) in [("rita", false, false), ("uma", true, false), ("alice", true, true)] {
                var client = server.client
                client.credentials = Credentials(user: user, password: "\(user)-secret")
                try await client.withConnection { connection in
                    #expect(connection.user == user)
                    #expect(try await connection.list().isEmpty == false)
                    do {
                        _ = try await connection.put(scratch.appendingPathComponent("new").path, as: "by-\(user)")
                        #expect(canUpload, "\(user) uploaded")
                    } catch let error as FerryClientError {
                        #expect(!canUpload && error.errorCode == .permissionDenied, "\(user): \(error)")
                    }
                    do {
                        try await connection.rename("existing", to: "existing")
                        #expect(canDelete, "\(user) renamed")
                    } catch let error as FerryClientError {
                        #expect(!canDelete && error.errorCode == .permissionDenied, "\(user): \(error)")
                    }
                }
            }
        }
    }

    /// Too many failed log-ins on one connection close it (211).
    @Test func tooManyFailedLogInsCloseTheConnection() async throws {
        try await TestServer.run(configuration: Self.configuration(maximumLoginFailures: 2)) { server in
            let connection = try await RawConnection(port: server.port)
            var hello = FerryConnectionDefaults.hello
            hello.maximumVersion = 2
            try await connection.send(raw: Handshake.magic)
            try await connection.send(.hello(hello))
            _ = try await connection.readRaw(count: 8)
            guard case .hello(let serverHello) = try await connection.next() else { throw TestFailure("no HELLO") }
            #expect(serverHello.login == .required)
            try await connection.send(.list)
            #expect(try await connection.expectError() == .permissionDenied, "log in first")
            try await connection.send(.auth(AuthRequest(user: "alice", password: "guess 1")))
            #expect(try await connection.expectError() == .authenticationFailed)
            try await connection.send(.auth(AuthRequest(user: "alice", password: "guess 2")))
            #expect(try await connection.expectError() == .tooManyFailedLogins)
            #expect(try await connection.next() == nil, "closed")
        }
    }

    /// Anonymous clients may get a level of their own beside the accounts.
    @Test func anonymousClientsBesideAccounts() async throws {
        try await TestServer.run(configuration: Self.configuration(anonymous: .read)) { server in
            try server.write("public", Array("p".utf8))
            try await server.client.withConnection { connection throws in
                #expect(connection.serverLogin == .offered)
                let names = try await connection.list().map(\.name)
                #expect(names == ["public"])
                await #expect(throws: FerryClientError.self) { try await connection.delete("public") }
            }
        }
    }

    @Test func passwordsGoInClearOnlyToThisMachine() throws {
        for (address, loopback) in [
            ("127.0.0.1", true), ("127.8.9.10", true), ("::1", true), ("::ffff:127.0.0.1", true),
            ("192.0.2.1", false), ("2001:db8::1", false), ("::ffff:192.0.2.1", false),
        ] {
            let socketAddress = try SocketAddress(ipAddress: address, port: 1)
            #expect(FerryClient.isLoopback(socketAddress) == loopback, "\(address)")
        }
        #expect(!FerryClient.isLoopback(nil))
    }

    /// The command line, as an ordinary user: FERRY_PASSWORD, --password-file, and the password in no log line.
    @Test func theCommandLineLogsInAndNeverShowsThePassword() async throws {
        let folder = Scratch.makeDirectory("accounts")
        let users = folder.appendingPathComponent("users").path
        _ = try await Binaries.run(
            "ferryd",
            ["users", "add", "alice", "--permission", "full", "--users", users, "--password-stdin"],
            input: "tr0ub4dor\n"
        )
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        try Data("tr0ub4dor\n".utf8).write(to: work.appendingPathComponent("password"))
        chmod(work.appendingPathComponent("password").path, 0o600)
        try Data("hello".utf8).write(to: work.appendingPathComponent("hello.txt"))
        try User.handOver(folder)
        try User.handOver(library)
        try User.handOver(work)
        let errors = Pipe()
        let daemon = try await Daemon.start(
            root: library,
            extraArguments: ["--users", users],
            as: .ordinaryUser,
            stderr: errors
        )
        let port = ["--port", "\(daemon.port)"]
        let anonymous = try await Binaries.run("ferry", ["list"] + port, as: .ordinaryUser)
        #expect(anonymous.status == 1 && anonymous.stderr.contains("requires a log-in: give --user NAME"))
        let put = try await Binaries.run(
            "ferry",
            ["put", "hello.txt", "--user", "alice", "--password-file", work.appendingPathComponent("password").path]
                + port,
            as: .ordinaryUser,
            currentDirectory: work
        )
        #expect(put.status == 0, "\(put.stderr)")
        let shell = try await Binaries.run(
            "ferry",
            ["--user", "alice"] + port,
            as: .ordinaryUser,
            environment: ["FERRY_PASSWORD": "tr0ub4dor"],
            input: "list\nrename hello.txt greeting.txt\nexit\n"
        )
        #expect(shell.stdout.contains("renamed hello.txt → greeting.txt"), "\(shell.stdout) \(shell.stderr)")
        _ = daemon.stop()
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(log.contains("user=alice"), "\(log)")
        #expect(!log.contains("tr0ub4dor"), "the password is in the log")
    }
}
