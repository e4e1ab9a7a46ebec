import FerryProtocol
import FerryTLS
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Ferry inside TLS (SPEC.md §4.1), end to end with the real binaries run by an ordinary user: a self-signed
/// certificate trusted on first use, a pinned fingerprint, a changed one, an authority's certificate, the mismatches
/// between plain and TLS peers, and a password that never crosses the wire in clear.
@Suite("TLS", .enabled(if: User.canRunUnprivileged))
struct TLSTests {
    typealias Daemon = CommandLineTests.Daemon

    /// A library, a working folder, and a config folder for the known-servers file, all the ordinary user's.
    private struct Folders {
        let library = Scratch.makeDirectory("library")
        let work = Scratch.makeDirectory("work")
        let config = Scratch.makeDirectory("config")

        init() throws {
            try User.handOver(self.library)
            try User.handOver(self.work)
            try User.handOver(self.config)
        }

        var environment: [String: String] { ["XDG_CONFIG_HOME": self.config.path] }
        var knownServers: URL { self.config.appendingPathComponent("ferry/known_servers") }

        /// ferryd on this library, run by the ordinary user, with a self-signed certificate (after `arguments`).
        func selfSignedServer(_ arguments: [String] = []) async throws -> Daemon {
            try await Daemon.start(
                root: self.library,
                extraArguments: arguments + ["--tls-self-signed"],
                as: .ordinaryUser
            )
        }

        /// A users file with these accounts, made by `ferryd users add` and handed to the ordinary user: its path.
        func usersFile(_ accounts: [(name: String, permission: String, password: String)]) async throws -> String {
            let folder = Scratch.makeDirectory("accounts")
            let path = folder.appendingPathComponent("users").path
            for account in accounts {
                let added = try await Binaries.run(
                    "ferryd",
                    ["users", "add", account.name, "--permission", account.permission, "--users", path]
                        + ["--password-stdin"],
                    input: account.password + "\n"
                )
                #expect(added.status == 0, "\(added.stderr)")
            }
            try User.handOver(folder)
            return path
        }

        func ferry(_ arguments: [String], _ daemon: Daemon, input: String? = nil) async throws -> Binaries.Outcome {
            try await Binaries.run(
                "ferry",
                arguments + ["--port", "\(daemon.port)"],
                as: .ordinaryUser,
                environment: self.environment,
                input: input,
                currentDirectory: self.work
            )
        }
    }

    @Test func aSelfSignedCertificateIsTrustedOnFirstUseAndKeptAcrossRestarts() async throws {
        let folders = try Folders()
        var daemon = try await folders.selfSignedServer()
        let fingerprint = try #require(daemon.fingerprint)
        #expect(fingerprint.count == 95, "32 hex pairs joined by colons: \(fingerprint)")

        // Not known, not vouched for by a system authority: refused, naming the fingerprint and the flag.
        let unknown = try await folders.ferry(["list", "--tls"], daemon)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("is not a known server"), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("--trust \(fingerprint)"), "\(unknown.stderr)")
        #expect(unknown.stderr.split(separator: "\n").count == 1, "one line: \(unknown.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folders.knownServers.path))

        // Accepted with --trust, remembered, and a round trip of a file large enough for sendfile on a plain server.
        let original = Scratch.randomBytes(3 << 20)
        try Data(original).write(to: folders.work.appendingPathComponent("big.bin"))
        try User.handOver(folders.work)
        let put = try await folders.ferry(["put", "big.bin", "--trust", fingerprint], daemon)
        #expect(put.status == 0, "\(put.stderr)")
        let remembered = try String(contentsOf: folders.knownServers, encoding: .utf8)
        #expect(remembered.contains("127.0.0.1:\(daemon.port) \(fingerprint)\n"), "\(remembered)")
        var info = stat()
        #expect(stat(folders.knownServers.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        for round in 1...2 {
            // The second download finds the checksum table the first one made: sendfile without TLS.
            let get = try await folders.ferry(["get", "big.bin", "--force", "--output", "copy.bin", "--tls"], daemon)
            #expect(get.status == 0, "round \(round): \(get.stderr)")
            let copy = [UInt8](try Data(contentsOf: folders.work.appendingPathComponent("copy.bin")))
            #expect(sameBytes(copy, original), "round \(round)")
        }

        // The certificate is kept, private, out of the listing, and the same after a restart.
        let kept = folders.library.appendingPathComponent(".ferry-tls/self-signed.pem")
        #expect(stat(kept.path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let list = try await folders.ferry(["list", "--json", "--tls"], daemon)
        #expect(list.status == 0 && !list.stdout.contains("ferry-tls") && list.stdout.contains("big.bin"))
        #expect(daemon.stop() == 0)
        daemon = try await folders.selfSignedServer()
        defer { _ = daemon.stop() }
        #expect(daemon.fingerprint == fingerprint)
        // A new port is a new server to the known-servers file; the same fingerprint is enough for a pin.
        let again = try await folders.ferry(["list", "--pin", fingerprint], daemon)
        #expect(again.status == 0, "\(again.stderr)")
    }

    /// The shell asks, SSH's way, on a terminal: "no" sends nothing and remembers nothing; "yes" remembers.
    @Test(.enabled(if: Binaries.canProvideTerminal))
    func theShellAsksWhetherToTrustAnUnknownServer() async throws {
        let folders = try Folders()
        let daemon = try await folders.selfSignedServer()
        defer { _ = daemon.stop() }
        let fingerprint = try #require(daemon.fingerprint)
        try Data("through TLS".utf8).write(to: folders.library.appendingPathComponent("shown.txt"))
        let shell = { (input: String) in
            try await Binaries.run(
                "ferry",
                ["--tls", "--port", "\(daemon.port)"],
                as: .ordinaryUser,
                environment: folders.environment,
                input: input,
                currentDirectory: folders.work,
                underTerminal: true
            )
        }
        let declined = try await shell("n\nlist\n")
        #expect(declined.stdout.contains(fingerprint), "\(declined.stdout)")
        #expect(declined.stdout.contains("Trust it from now on? [y/N]"))
        #expect(declined.stdout.contains("Not connected: nothing was sent."), "\(declined.stdout)")
        #expect(!FileManager.default.fileExists(atPath: folders.knownServers.path))

        let accepted = try await shell("y\nlist\nexit\n")
        #expect(accepted.status == 0, "\(accepted.stdout)")
        #expect(accepted.stdout.contains("Remembered in \(folders.knownServers.path)"), "\(accepted.stdout)")
        #expect(accepted.stdout.contains("shown.txt"), "the listing came through TLS: \(accepted.stdout)")
        #expect(try String(contentsOf: folders.knownServers, encoding: .utf8).contains(fingerprint))
        // Known now: no question.
        let known = try await shell("list\nexit\n")
        #expect(known.status == 0 && !known.stdout.contains("Trust it"), "\(known.stdout)")
    }

    /// The key is the server's identity: a TLS folder or key file that others may write or read is refused, never
    /// used (someone could have planted a key they know).
    @Test func aKeyOthersCouldHavePlantedOrReadIsRefused() async throws {
        let folders = try Folders()
        let tlsFolder = folders.library.appendingPathComponent(".ferry-tls")
        try FileManager.default.createDirectory(at: tlsFolder, withIntermediateDirectories: true)
        chmod(tlsFolder.path, 0o777)
        try User.handOver(folders.library)
        let arguments = ["--root", folders.library.path, "--port", "0", "--tls-self-signed"]
        let open = try await Binaries.run("ferryd", arguments, as: .ordinaryUser, timeout: .seconds(20))
        #expect(open.status != 0)
        #expect(open.stderr.contains("must belong to ferryd's user"), "\(open.stderr)")

        chmod(tlsFolder.path, 0o700)
        let daemon = try await folders.selfSignedServer()
        #expect(daemon.stop() == 0)
        let key = tlsFolder.appendingPathComponent("self-signed.pem")
        chmod(key.path, 0o644)
        let readable = try await Binaries.run("ferryd", arguments, as: .ordinaryUser, timeout: .seconds(20))
        #expect(readable.status != 0)
        #expect(readable.stderr.contains("only ferryd's user may read"), "\(readable.stderr)")
    }

    @Test func aChangedCertificateIsRefusedLoudly() async throws {
        let folders = try Folders()
        let daemon = try await folders.selfSignedServer()
        defer { _ = daemon.stop() }
        let other = String(repeating: "AB:", count: 31) + "AB"
        try FileManager.default.createDirectory(
            at: folders.knownServers.deletingLastPathComponent(),
            withIntermediateDirectories: true
        )
        try "127.0.0.1:\(daemon.port) \(other)\n".write(to: folders.knownServers, atomically: true, encoding: .utf8)
        try User.handOver(folders.config)
        let changed = try await folders.ferry(["list", "--tls"], daemon)
        #expect(changed.status == 1)
        #expect(changed.stderr.contains("HAS CHANGED"), "\(changed.stderr)")
        #expect(changed.stderr.contains(other) && changed.stderr.contains(daemon.fingerprint ?? "?"))
        // --trust does not override a remembered certificate: only deleting the line does.
        let trusted = try await folders.ferry(["list", "--trust", daemon.fingerprint ?? ""], daemon)
        #expect(trusted.status == 1 && trusted.stderr.contains("HAS CHANGED"), "\(trusted.stderr)")
        #expect(try String(contentsOf: folders.knownServers, encoding: .utf8).contains(other), "left as it was")
    }

    @Test func aPinnedFingerprintIsTheOnlyOneTrusted() async throws {
        let folders = try Folders()
        let daemon = try await folders.selfSignedServer()
        defer { _ = daemon.stop() }
        let fingerprint = try #require(daemon.fingerprint)
        // Pasted without colons, in lower case: the same fingerprint.
        let pinned = try await folders.ferry(
            ["list", "--pin", fingerprint.replacingOccurrences(of: ":", with: "").lowercased()],
            daemon
        )
        #expect(pinned.status == 0, "\(pinned.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folders.knownServers.path), "a pin is not remembered")
        let wrong = try await folders.ferry(["list", "--pin", String(repeating: "00", count: 32)], daemon)
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("is not the one pinned"), "\(wrong.stderr)")
        let malformed = try await folders.ferry(["list", "--pin", "12:34"], daemon)
        #expect(malformed.status == 64 && malformed.stderr.contains("is not a SHA-256 fingerprint"))
    }

    @Test func aCertificateFromAnAuthorityInACAFile() async throws {
        let folders = try Folders()
        let certificates = try TestCertificates.make()
        let stranger = try TestCertificates.make(authorityName: "Someone Else's CA")
        let files = Scratch.makeDirectory("certificates")
        for (name, text) in [
            ("server.pem", certificates.serverCertificatePEM), ("server.key", certificates.serverKeyPEM),
            ("ca.pem", certificates.authorityPEM), ("other-ca.pem", stranger.authorityPEM),
        ] {
            try text.write(to: files.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        try User.handOver(files)
        let daemon = try await Daemon.start(
            root: folders.library,
            extraArguments: [
                "--tls-cert", files.appendingPathComponent("server.pem").path,
                "--tls-key", files.appendingPathComponent("server.key").path,
            ],
            as: .ordinaryUser
        )
        defer { _ = daemon.stop() }
        let vouched = try await folders.ferry(["list", "--ca", files.appendingPathComponent("ca.pem").path], daemon)
        #expect(vouched.status == 0, "\(vouched.stderr)")
        let other = try await folders.ferry(
            ["list", "--ca", files.appendingPathComponent("other-ca.pem").path],
            daemon
        )
        #expect(other.status == 1)
        #expect(other.stderr.contains("is not vouched for by the authorities in"), "\(other.stderr)")
        // The system's authorities do not know this one either.
        let system = try await folders.ferry(["list", "--tls"], daemon)
        #expect(system.status == 1 && system.stderr.contains("is not a known server"), "\(system.stderr)")

        // A certificate from the same authority, naming the same address, but issued for clients: not a server's.
        let clientOnly = try TestCertificates.make(usage: .clientAuth)
        let authority = files.appendingPathComponent("client-ca.pem")
        try clientOnly.authorityPEM.write(to: authority, atomically: true, encoding: .utf8)
        try clientOnly.serverCertificatePEM.write(
            to: files.appendingPathComponent("client.pem"),
            atomically: true,
            encoding: .utf8
        )
        try clientOnly.serverKeyPEM.write(
            to: files.appendingPathComponent("client.key"),
            atomically: true,
            encoding: .utf8
        )
        try User.handOver(files)
        let misused = try await Daemon.start(
            root: Scratch.makeDirectory("misused"),
            extraArguments: [
                "--tls-cert", files.appendingPathComponent("client.pem").path,
                "--tls-key", files.appendingPathComponent("client.key").path,
            ]
        )
        defer { _ = misused.stop() }
        let refused = try await folders.ferry(["list", "--ca", authority.path], misused)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("not for server authentication"), "\(refused.stderr)")
    }

    @Test func plainAndTLSPeersEachGetAOneLineExplanation() async throws {
        let folders = try Folders()
        let tlsDaemon = try await folders.selfSignedServer()
        defer { _ = tlsDaemon.stop() }
        let plainClient = try await folders.ferry(["list"], tlsDaemon)
        #expect(plainClient.status == 1)
        #expect(
            plainClient.stderr
                == "ferry: 127.0.0.1:\(tlsDaemon.port) speaks Ferry inside TLS only: connect with --tls\n"
        )

        // A client written from SPEC.md alone gets the magic and ERROR 212 in the clear.
        let raw = try await RawConnection(port: tlsDaemon.port)
        try await raw.send(raw: Handshake.magic + RawConnection.encode(.hello(FerryConnectionDefaults.hello)))
        #expect(try await raw.readRaw(count: 8) == Handshake.magic)
        guard case .error(let reply)? = try await raw.next() else {
            Issue.record("no ERROR")
            return
        }
        #expect(reply.code == .tlsRequired && reply.code.rawValue == 212)
        #expect(reply.message == PlainClientRefuser.explanation)
        await raw.close()
        // Anything else that is not TLS gets the same as a line of text.
        let stranger = try await RawConnection(port: tlsDaemon.port)
        try await stranger.send(raw: Array("LIST\r\n".utf8))
        let line = String(decoding: try await stranger.readToEnd(), as: UTF8.self)
        #expect(line == "FERRY 212 this server speaks Ferry inside TLS only: connect with TLS (ferry --tls)\r\n")
        await stranger.close()

        let plainDaemon = try await Daemon.start(root: Scratch.makeDirectory("plain"), as: .current)
        defer { _ = plainDaemon.stop() }
        let tlsClient = try await folders.ferry(["list", "--tls"], plainDaemon)
        #expect(tlsClient.status == 1)
        #expect(
            tlsClient.stderr == "ferry: 127.0.0.1:\(plainDaemon.port) speaks Ferry without TLS: leave out --tls, "
                + "--ca and --pin (or ask its operator for TLS)\n"
        )
    }

    /// The permission matrix, end to end: three accounts of a TLS server run by an ordinary user, each trying every
    /// operation with the command-line client. A refusal is "permission denied" and changes nothing.
    @Test func eachAccountMayDoExactlyItsOperationsOverTLS() async throws {
        let folders = try Folders()
        let usersFile = try await folders.usersFile(
            [("rita", "read", "rita-secret"), ("uma", "upload", "uma-secret"), ("alice", "full", "alice-secret")]
        )
        for name in ["rita", "uma", "alice"] {
            for file in ["victim-\(name)", "movable-\(name)"] {
                try Data(file.utf8).write(to: folders.library.appendingPathComponent(file))
            }
            try Data("new from \(name)".utf8).write(to: folders.work.appendingPathComponent("new-\(name).txt"))
        }
        try Data("existing".utf8).write(to: folders.library.appendingPathComponent("existing"))
        try User.handOver(folders.library)
        try User.handOver(folders.work)
        let daemon = try await folders.selfSignedServer(["--users", usersFile])
        defer { _ = daemon.stop() }
        let fingerprint = try #require(daemon.fingerprint)

        let operations: [(String, (String) -> [String])] = [
            ("list", { _ in ["list"] }),
            ("get", { name in ["get", "existing", "--output", "got-\(name)", "--force"] }),
            ("put a new name", { name in ["put", "new-\(name).txt"] }),
            ("put over a file", { name in ["put", "new-\(name).txt", "--as", "existing", "--overwrite"] }),
            ("delete", { name in ["rm", "victim-\(name)"] }),
            ("rename", { name in ["mv", "movable-\(name)", "moved-\(name)"] }),
        ]
        let allowed: [String: Set<String>] = [
            "rita": ["list", "get"],
            "uma": ["list", "get", "put a new name"],
            "alice": ["list", "get", "put a new name", "put over a file", "delete", "rename"],
        ]
        for (user, permitted) in allowed {
            for (operation, arguments) in operations {
                let outcome = try await Binaries.run(
                    "ferry",
                    arguments(user) + ["--port", "\(daemon.port)", "--pin", fingerprint, "--user", user],
                    as: .ordinaryUser,
                    environment: folders.environment.merging(["FERRY_PASSWORD": "\(user)-secret"]) { $1 },
                    currentDirectory: folders.work
                )
                if permitted.contains(operation) {
                    #expect(outcome.status == 0, "\(user) may \(operation): \(outcome.stderr)")
                } else {
                    #expect(outcome.status == 1, "\(user) may not \(operation)")
                    #expect(outcome.stderr.contains("permission"), "\(user) \(operation): \(outcome.stderr)")
                }
            }
        }
        let left = try Scratch.libraryContents(folders.library)
        #expect(left.contains("victim-rita") && left.contains("victim-uma") && !left.contains("victim-alice"))
        #expect(left.contains("movable-rita") && left.contains("movable-uma") && left.contains("moved-alice"))
        #expect(!left.contains("new-rita.txt") && left.contains("new-uma.txt") && left.contains("new-alice.txt"))
        let existing = try String(contentsOf: folders.library.appendingPathComponent("existing"), encoding: .utf8)
        #expect(existing == "new from alice", "only alice replaced it")
    }

    /// As an ordinary user: a wrong password is refused, late; and ferryd will not open itself to other machines
    /// without accounts or a word on what anonymous clients may do.
    @Test func aWrongPasswordIsRefusedLateAndAnOpenServerNeedsConsent() async throws {
        let folders = try Folders()
        let usersFile = try await folders.usersFile([("alice", "read", "right")])
        let daemon = try await folders.selfSignedServer(["--users", usersFile])
        defer { _ = daemon.stop() }
        let started = ContinuousClock.now
        let wrong = try await Binaries.run(
            "ferry",
            ["list", "--port", "\(daemon.port)", "--pin", daemon.fingerprint ?? "", "--user", "alice"],
            as: .ordinaryUser,
            environment: folders.environment.merging(["FERRY_PASSWORD": "wrong"]) { $1 }
        )
        #expect(ContinuousClock.now - started >= .milliseconds(250), "a failure is answered late")
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("wrong user name or password"), "\(wrong.stderr)")

        let open = try await Binaries.run(
            "ferryd",
            ["--root", folders.library.path, "--host", "0.0.0.0", "--port", "0"],
            as: .ordinaryUser
        )
        #expect(open.status == 64, "\(open.stderr)")
        #expect(open.stderr.contains("--users FILE") && open.stderr.contains("--anonymous read or --anonymous write"))
    }

    /// Everything between client and server, recorded by a relay on the path: with TLS, neither the password nor the
    /// user name nor any Ferry frame appears; without it (the control), the password does.
    @Test func thePasswordNeverCrossesTheWireInClear() async throws {
        let folders = try Folders()
        let password = "correct-horse-battery-staple"
        let usersFile = try await folders.usersFile([("alice", "full", password)])
        try Data("secret contents".utf8).write(to: folders.library.appendingPathComponent("notes.txt"))
        try User.handOver(folders.library)

        for tls in [true, false] {
            let daemon = try await Daemon.start(
                root: folders.library,
                extraArguments: ["--users", usersFile] + (tls ? ["--tls-self-signed"] : []),
                as: .ordinaryUser
            )
            defer { _ = daemon.stop() }
            let relay = try RecordingRelay.start(forwardingTo: daemon.port)
            let security = tls ? ["--pin", daemon.fingerprint ?? ""] : []
            let list = try await Binaries.run(
                "ferry",
                ["get", "notes.txt", "--force", "--user", "alice", "--port", "\(relay.port)"] + security,
                as: .ordinaryUser,
                environment: folders.environment.merging(["FERRY_PASSWORD": password]) { $1 },
                currentDirectory: folders.work
            )
            #expect(list.status == 0, "\(list.stderr)")
            let captured = relay.captured
            relay.stop()
            #expect(captured.count > 200, "the session crossed the relay: \(captured.count) bytes")
            let seen = { (text: String) in captured.firstRange(of: Array(text.utf8)) != nil }
            if tls {
                #expect(!seen(password), "the password is never in clear")
                #expect(!seen("alice") && !seen("secret contents") && !seen("notes.txt"))
                #expect(captured.firstRange(of: Handshake.magic) == nil, "the magic travels inside TLS")
                #expect(captured.first == 0x16, "the first byte is a TLS handshake record")
            } else {
                #expect(seen(password), "the control: without TLS the relay sees the password")
            }
        }
    }
}
