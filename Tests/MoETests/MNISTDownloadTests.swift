// Tests for MNISTDownload.swift against a tiny HTTP/1.1 server on 127.0.0.1.
//
// No machine here reaches the internet, so the test plays the mirrors itself:
// a POSIX-socket server bound to an ephemeral loopback port serves small
// generated .gz files, a 404, and corrupt files. An unreachable mirror is a
// loopback port that was bound once and closed, so nothing listens there.

import XCTest
import Foundation
@testable import MoE
#if canImport(Glibc)
import Glibc
private let streamSocketType = Int32(SOCK_STREAM.rawValue)
private let sendFlags = Int32(MSG_NOSIGNAL)  // a vanished client must not SIGPIPE the test
#elseif canImport(Darwin)
import Darwin
private let streamSocketType = SOCK_STREAM
private let sendFlags: Int32 = 0               // Darwin uses SO_NOSIGPIPE instead, set per socket
#endif

/// Binds `socket` to 127.0.0.1 on a port the kernel picks, and returns that port.
private func bindToLoopback(_ socket: Int32) -> UInt16? {
    var address = sockaddr_in()
    #if canImport(Darwin)
    address.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
    #endif
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) }
    }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
    }
    return bound == 0 && named == 0 ? UInt16(bigEndian: address.sin_port) : nil
}

/// A loopback port with nothing listening on it.
private func closedLoopbackPort() throws -> UInt16 {
    let probe = socket(AF_INET, streamSocketType, 0)
    defer { close(probe) }
    return try XCTUnwrap(bindToLoopback(probe))
}

/// A single-threaded HTTP/1.1 server for fixed routes (path -> status, body),
/// one connection at a time, each closed after its response. It stops by
/// itself after `maxRequests` requests or `lifetime` seconds, or on `stop()`.
final class TinyHTTPServer {
    let port: UInt16
    private let listener: Int32
    private let routes: [String: (status: Int, body: [UInt8])]
    private let maxRequests: Int
    private let deadline: Date
    private let lock = NSLock()
    private var stopRequested = false
    private var paths: [String] = []
    private let finished = DispatchSemaphore(value: 0)

    init(routes: [String: (status: Int, body: [UInt8])], maxRequests: Int = 40, lifetime: TimeInterval = 60) throws {
        listener = socket(AF_INET, streamSocketType, 0)
        guard listener >= 0, let port = bindToLoopback(listener), listen(listener, 8) == 0 else {
            close(listener)
            throw XCTSkip("cannot listen on 127.0.0.1 here")
        }
        self.port = port
        self.routes = routes
        self.maxRequests = maxRequests
        self.deadline = Date().addingTimeInterval(lifetime)
        Thread { [self] in serve() }.start()
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// The request paths seen so far, in order.
    var requestedPaths: [String] {
        lock.lock(); defer { lock.unlock() }
        return paths
    }

    /// Asks the loop to end and waits (at most 5 s) until the socket is closed.
    func stop() {
        lock.lock(); stopRequested = true; lock.unlock()
        _ = finished.wait(timeout: .now() + 5)
    }

    private var shouldStop: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopRequested
    }

    private func serve() {
        defer { close(listener); finished.signal() }
        var served = 0
        while served < maxRequests && Date() < deadline && !shouldStop {
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }  // wake every 100 ms to check the bounds
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { continue }
            served += 1
            respond(on: connection)
            close(connection)
        }
    }

    private func respond(on connection: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)  // a stuck client cannot hold the server
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        #if canImport(Darwin)
        var one: Int32 = 1
        setsockopt(connection, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif

        // Read up to the blank line that ends the request head; the body of a GET is empty.
        var request = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384 && !request.ends(with: [13, 10, 13, 10]) {
            let count = recv(connection, &buffer, buffer.count, 0)
            guard count > 0 else { return }
            request += buffer[0..<count]
        }
        let requestLine = String(decoding: request.prefix { $0 != 13 }, as: UTF8.self).split(separator: " ")
        let path = requestLine.count >= 2 ? String(requestLine[1]) : ""
        lock.lock(); paths.append(path); lock.unlock()

        let (status, body) = routes[path] ?? (404, Array("not found\n".utf8))
        let reason = status == 200 ? "OK" : "Not Found"
        let head = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/octet-stream\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        guard sendAll(Array(head.utf8), on: connection) else { return }
        // In pieces, so a client sees the download progress more than once.
        for start in stride(from: 0, to: body.count, by: 1024) {
            guard sendAll(Array(body[start..<min(start + 1024, body.count)]), on: connection) else { return }
        }
    }

    private func sendAll(_ bytes: [UInt8], on connection: Int32) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, sendFlags) }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

final class MNISTDownloadTests: XCTestCase {
    /// The four files of a small valid MNIST, gzipped: 5 training and 3 test images of 4x3.
    static let goodFiles: [String: [UInt8]] = [
        "train-images-idx3-ubyte.gz": storedGzip(idxImages(count: 5, rows: 4, cols: 3)),
        "train-labels-idx1-ubyte.gz": storedGzip(idxLabels([0, 1, 2, 3, 4])),
        "t10k-images-idx3-ubyte.gz": storedGzip(idxImages(count: 3, rows: 4, cols: 3)),
        "t10k-labels-idx1-ubyte.gz": storedGzip(idxLabels([5, 6, 7])),
    ]

    /// /good/ serves all four; /corrupt/ serves three kinds of bad file and a 404;
    /// everything else is a 404.
    static func makeServer() throws -> TinyHTTPServer {
        var routes: [String: (status: Int, body: [UInt8])] = [:]
        for (name, bytes) in goodFiles { routes["/good/" + name] = (200, bytes) }
        var damaged = goodFiles["train-images-idx3-ubyte.gz"]!
        damaged[damaged.count - 12] ^= 0xFF                                   // a pixel: CRC mismatch
        routes["/corrupt/train-images-idx3-ubyte.gz"] = (200, damaged)
        routes["/corrupt/train-labels-idx1-ubyte.gz"] = (200, goodFiles["t10k-images-idx3-ubyte.gz"]!)  // wrong kind
        routes["/corrupt/t10k-images-idx3-ubyte.gz"] = (200, Array("<html>Service Unavailable</html>".utf8))
        return try TinyHTTPServer(routes: routes)
    }

    func testDownloadsEachFileFromTheFirstMirrorThatServesItIntact() throws {
        let server = try MNISTDownloadTests.makeServer()
        defer { server.stop() }
        let folder = try makeTemporaryDataFolder("download")
        defer { try? FileManager.default.removeItem(at: folder) }
        let unreachable = try closedLoopbackPort()
        let mirrors = ["http://127.0.0.1:\(unreachable)/", server.baseURL + "/missing/",
                       server.baseURL + "/corrupt/", server.baseURL + "/good"].map { URL(string: $0)! }

        let lock = NSLock()
        var reports: [MNISTDownload.Progress] = []
        let downloaded = try MNISTDownload.downloadMissing(into: folder, mirrors: mirrors, timeout: 5) { report in
            lock.lock(); reports.append(report); lock.unlock()
        }

        XCTAssertEqual(Set(downloaded), Set(MNISTDownloadTests.goodFiles.keys))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted(),
                       MNISTDownloadTests.goodFiles.keys.sorted(), "no temporary or rejected file is left over")
        for (name, bytes) in MNISTDownloadTests.goodFiles {
            XCTAssertEqual([UInt8](try Data(contentsOf: folder.appendingPathComponent(name))), bytes)
            let last = reports.last { $0.file == name && $0.url.path.hasPrefix("/good/") }
            XCTAssertEqual(last?.bytesReceived, bytes.count, "progress for \(name)")
            XCTAssertEqual(last?.bytesExpected, bytes.count)
        }
        XCTAssertTrue(server.requestedPaths.contains("/corrupt/train-images-idx3-ubyte.gz"))
        let mnist = try MNIST.load(directory: folder)
        XCTAssertEqual([mnist.train.count, mnist.test.count], [5, 3])
        XCTAssertEqual(mnist.test.labels, [5, 6, 7])
    }

    func testCorruptDownloadsAreRejectedAndNotKept() throws {
        let server = try MNISTDownloadTests.makeServer()
        defer { server.stop() }
        let folder = try makeTemporaryDataFolder("download")
        defer { try? FileManager.default.removeItem(at: folder) }

        XCTAssertThrowsError(try MNISTDownload.downloadMissing(
            into: folder, mirrors: [URL(string: server.baseURL + "/corrupt/")!], timeout: 5)) { error in
            guard let error = error as? DownloadError else { return XCTFail("not a DownloadError: \(error)") }
            XCTAssertEqual(error.missingFiles, MNIST.fileNames.map { $0 + ".gz" })
            XCTAssertEqual(error.failures.filter { $0.contains("downloaded file rejected") }.count, 3)
            XCTAssertEqual(error.failures.filter { $0.hasSuffix("HTTP 404") }.count, 1)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [])
    }

    func testUnreachableMirrorGivesAClearMessage() throws {
        let folder = try makeTemporaryDataFolder("download")
        defer { try? FileManager.default.removeItem(at: folder) }
        try writeSmallMNIST(to: folder)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("train-images-idx3-ubyte.gz"))
        try FileManager.default.removeItem(at: folder.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
        let closedPort = try closedLoopbackPort()
        let mirror = "http://127.0.0.1:\(closedPort)/mnist/"

        XCTAssertThrowsError(try MNISTDownload.downloadMissing(into: folder, mirrors: [URL(string: mirror)!],
                                                               timeout: 5)) { error in
            let message = "\(error)"
            note("unreachable mirror message: \(message)")
            XCTAssertFalse(message.contains("\n"))
            for part in ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", mirror, folder.path] {
                XCTAssertTrue(message.contains(part), "\(part) not in: \(message)")
            }
            XCTAssertFalse(message.contains("train-labels"), "files already present are not reported")
        }
    }

    /// Every file's error is in the message, mirror by mirror, and each failed
    /// attempt is reported to the progress callback as it fails; a mirror that
    /// refuses the connection is not tried again for the other files.
    func testEveryFilesErrorIsInTheMessageAndEachFailureIsReportedAsItHappens() throws {
        let server = try MNISTDownloadTests.makeServer()
        defer { server.stop() }
        let folder = try makeTemporaryDataFolder("download")
        defer { try? FileManager.default.removeItem(at: folder) }
        let closed = try closedLoopbackPort()
        let mirrors = [URL(string: "http://127.0.0.1:\(closed)/")!, URL(string: server.baseURL + "/corrupt/")!]
        let lock = NSLock()
        var failures: [String] = []
        XCTAssertThrowsError(try MNISTDownload.downloadMissing(into: folder, mirrors: mirrors, timeout: 5) { p in
            if let reason = p.failure { lock.lock(); failures.append("\(p.url.absoluteString): \(reason)"); lock.unlock() }
        }) { error in
            let message = "\(error)"
            XCTAssertFalse(message.contains("\n"))
            for file in MNIST.fileNames.map({ $0 + ".gz" }) {
                XCTAssertTrue(message.contains("\(file) (http://127.0.0.1:\(closed)"), "\(file)'s errors: \(message)")
            }
            XCTAssertTrue(message.contains("HTTP 404"), message)
            XCTAssertTrue(message.contains("not tried (connection refused for an earlier file)"), message)
            XCTAssertTrue(message.contains("downloaded file rejected"), message)
            XCTAssertFalse(message.contains("NSURLErrorDomain"), message)
        }
        // One report per failed attempt: the closed port once (then it is skipped
        // for the other files, as "not tried" in the message), the corrupt mirror for all four.
        XCTAssertEqual(failures.count, 1 + 4, "\(failures)")
        XCTAssertEqual(failures.filter { $0.contains(":\(closed)/") }.count, 1, "\(failures)")
    }

    /// A server that accepts the connection and never answers: a readable
    /// message after the (here short) timeout, not minutes of silence.
    func testAServerThatNeverAnswersTimesOutWithAReadableMessage() throws {
        let listener = socket(AF_INET, streamSocketType, 0)
        defer { close(listener) }
        guard listener >= 0, let port = bindToLoopback(listener), listen(listener, 8) == 0 else {
            throw XCTSkip("cannot listen on 127.0.0.1 here")
        }
        // The kernel completes the handshake for the backlog; nobody ever reads or writes.
        let start = Date()
        XCTAssertThrowsError(try MNISTDownload.fetch(URL(string: "http://127.0.0.1:\(port)/x.gz")!, timeout: 0.5) { _, _ in }) {
            XCTAssertTrue("\($0)".contains("no answer within 0.5 s"), "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 10, "the timeout was not applied")
    }

    func testMirrorsComeFromTheEnvironmentAndOnlyMissingFilesAreFetched() throws {
        let server = try MNISTDownloadTests.makeServer()
        defer { server.stop() }
        let folder = try makeTemporaryDataFolder("download")
        defer { try? FileManager.default.removeItem(at: folder) }
        try writeSmallMNIST(to: folder)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))

        let environment = ["MNIST_MIRRORS": " \(server.baseURL)/missing/ , not a url, \(server.baseURL)/good/"]
        XCTAssertEqual(MNISTDownload.mirrors(override: nil, environment: environment).map(\.absoluteString),
                       [server.baseURL + "/missing/", server.baseURL + "/good/"])
        let downloaded = try MNISTDownload.downloadMissing(into: folder, environment: environment, timeout: 5)
        XCTAssertEqual(downloaded, ["t10k-labels-idx1-ubyte.gz"])
        XCTAssertEqual(server.requestedPaths,
                       ["/missing/t10k-labels-idx1-ubyte.gz", "/good/t10k-labels-idx1-ubyte.gz"])

        // Nothing missing: no request at all, even to a dead mirror.
        let deadPort = try closedLoopbackPort()
        let dead = URL(string: "http://127.0.0.1:\(deadPort)/")!
        XCTAssertEqual(try MNISTDownload.downloadMissing(into: folder, mirrors: [dead], timeout: 5), [])
    }

    func testMirrorChoice() {
        let given = [URL(string: "http://127.0.0.1:9/x/")!]
        XCTAssertEqual(MNISTDownload.mirrors(override: given, environment: ["MNIST_MIRRORS": "http://a/"]), given)
        XCTAssertEqual(MNISTDownload.mirrors(override: nil, environment: [:]), MNISTDownload.defaultMirrors)
        XCTAssertEqual(MNISTDownload.mirrors(override: [], environment: ["MNIST_MIRRORS": "ftp://a/, ,"]),
                       MNISTDownload.defaultMirrors)
        XCTAssertEqual(MNISTDownload.defaultMirrors.map(\.absoluteString),
                       ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                        "https://storage.googleapis.com/cvdf-datasets/mnist/"])
        XCTAssertEqual(MNISTDownload.fileURL(base: URL(string: "http://h:1/a")!, file: "f.gz").absoluteString,
                       "http://h:1/a/f.gz")
    }
}
