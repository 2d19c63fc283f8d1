// HubDownload against a small HTTP/1.1 server on 127.0.0.1 that plays the hub:
// it serves the fixture checkpoints under /REPO/resolve/REV/FILE, honours
// `Range: bytes=N-` with 206, and can cut a response short to simulate a
// dropped connection. No test touches the network.
import Foundation
import XCTest
@testable import MoE
#if canImport(Glibc)
import Glibc
private let streamType = Int32(SOCK_STREAM.rawValue)
private let noSignal = Int32(MSG_NOSIGNAL)
#elseif canImport(Darwin)
import Darwin
private let streamType = SOCK_STREAM
private let noSignal: Int32 = 0
#endif
private func systemSend(_ s: Int32, _ p: UnsafeRawPointer?, _ n: Int, _ flags: Int32) -> Int { send(s, p, n, flags) }

/// Files by path, ranges, and an optional cut: the first `cutOnce[path]` bytes only, once.
final class RangeHTTPServer: @unchecked Sendable {
    let port: UInt16
    private let listener: Int32
    private let files: [String: [UInt8]]
    private let lock = NSLock()
    private var cutOnce: [String: Int]
    private var stopped = false
    private(set) var requests: [(path: String, range: String?)] = []
    private let done = DispatchSemaphore(value: 0)

    init(files: [String: [UInt8]], cutOnce: [String: Int] = [:]) throws {
        self.files = files
        self.cutOnce = cutOnce
        let listener = socket(AF_INET, streamType, 0)
        self.listener = listener
        var address = sockaddr_in()
        #if canImport(Darwin)
        address.sin_len = UInt8(MemoryLayout<sockaddr_in>.size)
        #endif
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        guard ok, listen(listener, 8) == 0 else { close(listener); throw XCTSkip("cannot listen on 127.0.0.1") }
        self.port = UInt16(bigEndian: address.sin_port)
        Thread { [self] in serve() }.start()
    }

    var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    func stop() { lock.lock(); stopped = true; lock.unlock(); _ = done.wait(timeout: .now() + 5) }

    private func serve() {
        defer { close(listener); done.signal() }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            lock.lock(); let stop = stopped; lock.unlock()
            if stop { return }
            var ready = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 50) > 0 else { continue }
            let c = accept(listener, nil, nil)
            guard c >= 0 else { continue }
            respond(c)
            close(c)
        }
    }

    private func respond(_ c: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request = [UInt8](), buffer = [UInt8](repeating: 0, count: 4096)
        while request.count < 16384, !String(decoding: request, as: UTF8.self).contains("\r\n\r\n") {
            let n = recv(c, &buffer, buffer.count, 0)
            guard n > 0 else { return }
            request += buffer[0..<n]
        }
        let lines = String(decoding: request, as: UTF8.self).components(separatedBy: "\r\n")
        let path = lines[0].split(separator: " ").dropFirst().first.map(String.init) ?? ""
        let range = lines.first { $0.lowercased().hasPrefix("range:") }.map { String($0.dropFirst(6)).trimmingCharacters(in: .whitespaces) }
        lock.lock(); requests.append((path, range)); let cut = cutOnce.removeValue(forKey: path); lock.unlock()
        guard let body = files[path] else {
            send(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); return
        }
        var start = 0
        if let range, range.hasPrefix("bytes="), let n = Int(range.dropFirst(6).prefix { $0 != "-" }) { start = n }
        guard start <= body.count else { send(c, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n"); return }
        let part = Array(body[start...])
        let head = start > 0
            ? "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes \(start)-\(body.count - 1)/\(body.count)\r\n"
            : "HTTP/1.1 200 OK\r\n"
        send(c, head + "Content-Length: \(part.count)\r\nConnection: close\r\n\r\n")
        let sent = cut.map { min($0, part.count) } ?? part.count
        for s in stride(from: 0, to: sent, by: 4096) { _ = sendBytes(c, Array(part[s..<min(s + 4096, sent)])) }
    }

    private func send(_ c: Int32, _ text: String) { _ = sendBytes(c, Array(text.utf8)) }

    private func sendBytes(_ c: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { systemSend(c, $0.baseAddress, $0.count, noSignal) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }
}

final class PretrainedDownloadTests: XCTestCase {
    /// The fixture `folder` served as repository `repo` at revision `rev`.
    func hub(_ repo: String, _ folder: String, rev: String = "main") throws -> [String: [UInt8]] {
        let source = PretrainedParityTests.fixtures.appendingPathComponent(folder)
        var files: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: source.path) where name != "reference.json" {
            files["/\(repo)/resolve/\(rev)/\(name)"] = [UInt8](try Data(contentsOf: source.appendingPathComponent(name)))
        }
        return files
    }

    func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("hub-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    func testSingleFileCheckpointDownloadsAndLoads() throws {
        let server = try RangeHTTPServer(files: try hub("tiny/mixtral", "mixtral"))
        defer { server.stop() }
        let dir = try scratch()
        var reports = 0
        let files = try HubDownload.download(repo: "tiny/mixtral", into: dir, endpoint: server.endpoint, timeout: 5) { _, _, _ in reports += 1 }
        XCTAssertEqual(files, ["config.json", "tokenizer.json", "model.safetensors"])
        XCTAssertGreaterThan(reports, 3, "progress is reported")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["config.json", "model.safetensors", "tokenizer.json"])
        XCTAssertTrue(server.requests.contains { $0.path == "/tiny/mixtral/resolve/main/model.safetensors.index.json" }, "asks for an index first")
        let model = try PretrainedModel(directory: dir)
        XCTAssertEqual(model.config.family, .mixtral)
    }

    func testShardedCheckpointAtARevision() throws {
        let server = try RangeHTTPServer(files: try hub("tiny/olmoe", "olmoe-f16-sharded", rev: "v1"))
        defer { server.stop() }
        let dir = try scratch()
        let files = try HubDownload.download(repo: "tiny/olmoe", revision: "v1", into: dir, endpoint: server.endpoint, timeout: 5)
        XCTAssertEqual(files.count, 5)
        XCTAssertTrue(files.contains("model-00002-of-00002.safetensors"))
        let original = PretrainedParityTests.fixtures.appendingPathComponent("olmoe-f16-sharded")
        for name in files {
            XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent(name)), try Data(contentsOf: original.appendingPathComponent(name)), name)
        }
        _ = try PretrainedModel(directory: dir)
    }

    func testADroppedConnectionResumesWithARangeRequest() throws {
        let shard = "/tiny/mixtral/resolve/main/model.safetensors"
        let server = try RangeHTTPServer(files: try hub("tiny/mixtral", "mixtral"), cutOnce: [shard: 50_000])
        defer { server.stop() }
        let dir = try scratch()
        XCTAssertThrowsError(try HubDownload.download(repo: "tiny/mixtral", into: dir, endpoint: server.endpoint, timeout: 5)) { error in
            XCTAssertTrue("\(error)".contains("run the command again to resume"), "\(error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors").path), "no half file under the real name")
        let partial = try Data(contentsOf: dir.appendingPathComponent("model.safetensors.incomplete"))
        XCTAssertEqual(partial.count, 50_000)
        let before = server.requests.count
        _ = try HubDownload.download(repo: "tiny/mixtral", into: dir, endpoint: server.endpoint, timeout: 5)
        let again = server.requests[before...]
        XCTAssertEqual(again.map(\.path), ["/tiny/mixtral/resolve/main/model.safetensors.index.json", shard],
                       "complete files are not fetched again")
        XCTAssertEqual(again.last?.range, "bytes=50000-")
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("model.safetensors")),
                       try Data(contentsOf: PretrainedParityTests.fixtures.appendingPathComponent("mixtral/model.safetensors")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.safetensors.incomplete").path))
    }

    func testOfflineAndMissingRepositoryAreOneLineErrors() throws {
        let server = try RangeHTTPServer(files: [:])
        let port = server.port
        server.stop()   // nothing listens there now
        let dir = try scratch()
        XCTAssertThrowsError(try HubDownload.download(repo: "a/b", into: dir, endpoint: URL(string: "http://127.0.0.1:\(port)")!, timeout: 5)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("http://127.0.0.1:\(port)/a/b/resolve/main/config.json"), text)
            XCTAssertTrue(text.contains("download failed"), text)
            XCTAssertFalse(text.contains("\n"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path))
        let empty = try RangeHTTPServer(files: [:])
        defer { empty.stop() }
        XCTAssertThrowsError(try HubDownload.download(repo: "a/b", into: dir, endpoint: empty.endpoint, timeout: 5)) { error in
            XCTAssertTrue("\(error)".contains("HTTP 404"), "\(error)")
        }
        XCTAssertThrowsError(try HubDownload.download(repo: "../etc", into: dir, endpoint: empty.endpoint, timeout: 5)) { error in
            XCTAssertTrue("\(error)".contains("owner/name"), "\(error)")
        }
    }
}
