// What the command-line tests of mnist-moe and gpt-moe share: running the
// built executable as a user would (a subprocess, its exit status, stdout and
// stderr, with a timeout so a hang fails instead of stalling the suite), fresh
// temporary folders, and reading back the JSON and SVG files a run writes.
//
// A test class names its program by overriding `program`; CommandLineTests.swift
// states the contract both programs keep (status 0, 1 or 2, one-line errors).
import Foundation
import XCTest
#if canImport(FoundationXML)
import FoundationXML
#endif

class CommandLineTestCase: XCTestCase {
    /// The executable under test ("mnist-moe", "gpt-moe").
    class var program: String { preconditionFailure("override `program`") }

    /// The repository root (this file is Tests/MoETests/CommandLineHarness.swift).
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// What one run of the executable did.
    struct Outcome {
        var status: Int32
        var reason: Process.TerminationReason
        var stdout: String
        var stderr: String
        /// Non-empty lines of stderr.
        var errorLines: [String] { stderr.split(separator: "\n").map(String.init) }
        var summary: String { "status \(status) (\(reason == .exit ? "exit" : "signal"))\nstdout:\n\(stdout)\nstderr:\n\(stderr)" }
    }

    /// The two pipes' contents, each written by its own reader thread and read only
    /// after `DispatchGroup.wait`, which orders the writes before the reads.
    private final class Collected: @unchecked Sendable {
        var stdout = Data(), stderr = Data()
    }

    /// The program in the products directory. On Linux the test bundle is a file in that
    /// directory; on macOS a .xctest bundle in it. The repository's .build/debug is the fallback.
    func executable() throws -> URL {
        let bundle = Bundle(for: Self.self).bundleURL
        let candidates = [bundle.deletingLastPathComponent(), bundle,
                          Self.repositoryRoot.appendingPathComponent(".build/debug")]
            .map { $0.appendingPathComponent(Self.program) }
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw XCTSkip("\(Self.program) not built (looked in " + candidates.map(\.path).joined(separator: ", ") +
                          "); `swift build` builds it, and `swift test` builds it first")
        }
        return found
    }

    /// Runs the program with `arguments` in `directory` and waits at most `timeout` seconds.
    /// `environment` adds to (or replaces entries of) the test's own environment.
    func run(_ arguments: [String], in directory: URL? = nil, timeout: TimeInterval = 120,
             environment: [String: String] = [:], line: UInt = #line) throws -> Outcome {
        let process = Process()
        process.executableURL = try executable()
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.currentDirectoryURL = directory ?? FileManager.default.temporaryDirectory
        let (out, err) = (Pipe(), Pipe())
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice

        // Drain both pipes while the process runs: a child blocked on a full pipe
        // buffer (64 KiB) would otherwise never exit.
        let done = DispatchGroup()
        let collected = Collected()
        for (pipe, isOut) in [(out, true), (err, false)] {
            done.enter()
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                if isOut { collected.stdout = data } else { collected.stderr = data }
                done.leave()
            }
        }
        done.enter()
        process.terminationHandler = { _ in done.leave() }
        try process.run()

        if done.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()   // SIGTERM to the child this test started
            _ = done.wait(timeout: .now() + 10)
            XCTFail("\(Self.program) \(arguments.joined(separator: " ")) did not finish in \(Int(timeout)) s", line: line)
        }
        return Outcome(status: process.terminationStatus, reason: process.terminationReason,
                       stdout: String(decoding: collected.stdout, as: UTF8.self),
                       stderr: String(decoding: collected.stderr, as: UTF8.self))
    }

    /// A fresh empty directory, removed after the test.
    func temporaryDirectory(_ name: String = "cli") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(Self.program)-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// Every flag a parser accepts, read from the `case "--flag":` lines of the
    /// program's Options.swift and of the shared RoutingFlags.swift, so a flag
    /// added without a line in the usage text fails the --help tests.
    func flagsInParser() throws -> Set<String> {
        let files = ["Sources/\(Self.program)/Options.swift", "Sources/MoE/MoE/RoutingFlags.swift"]
        var flags = Set<String>()
        for file in files {
            let source = try String(contentsOf: Self.repositoryRoot.appendingPathComponent(file), encoding: .utf8)
            for line in source.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("case \"-") {
                // case "-h", "--help": o.help = true
                let head = line.split(separator: ":", maxSplits: 1)[0]
                for piece in head.split(separator: "\"") where piece.hasPrefix("-") { flags.insert(String(piece)) }
            }
        }
        return flags
    }

    // MARK: Reading what a run wrote

    /// Counts the elements of an SVG file and collects its text.
    final class SVGReader: NSObject, XMLParserDelegate {
        var root: String?
        var counts: [String: Int] = [:]
        var text = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
                    qualifiedName: String?, attributes: [String: String] = [:]) {
            if root == nil { root = name }
            counts[name, default: 0] += 1
        }
        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }
    }

    /// The SVG file, asserted well-formed XML with an <svg> root.
    func readSVG(_ url: URL, line: UInt = #line) throws -> SVGReader {
        let parser = XMLParser(data: try Data(contentsOf: url))
        let reader = SVGReader()
        parser.delegate = reader
        XCTAssertTrue(parser.parse(), "\(url.lastPathComponent) is not well-formed XML: "
                      + "\(parser.parserError.map { "\($0)" } ?? "?")", line: line)
        XCTAssertEqual(reader.root, "svg", url.lastPathComponent, line: line)
        return reader
    }

    /// The JSON file, which must hold an object.
    func readJSON(_ url: URL) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
        return try XCTUnwrap(object as? [String: Any], "\(url.lastPathComponent) is not a JSON object")
    }
}
