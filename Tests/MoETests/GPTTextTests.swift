// The text side of gpt-moe: tokenizers (round trips, unknown input, saving),
// BPE's chunking and training, token windows and the train/validation split,
// the corpus loader and the synthetic corpus. Tiny Shakespeare is read from
// ./data/tinyshakespeare or ../shared/data/tinyshakespeare when it is there
// (skipped, with one line saying how to enable it, when not).
import XCTest
@testable import MoE

final class GPTTextTests: XCTestCase {
    /// Where gpt-moe downloads it (./data/tinyshakespeare), else beside the clone.
    static let candidates = ["data/tinyshakespeare/input.txt", "../shared/data/tinyshakespeare/input.txt"]
        .map { TestData.root.appendingPathComponent($0).standardizedFileURL }
    static let shakespeare = candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[0]

    private func requireShakespeare() throws -> String {
        guard FileManager.default.fileExists(atPath: Self.shakespeare.path) else {
            throw XCTSkip("Tiny Shakespeare not found in " + Self.candidates.map(\.path).joined(separator: " or ") +
                          "; to run this test, run `swift run gpt-moe --steps 1` once (it downloads to ./data/tinyshakespeare)")
        }
        return try TextCorpus.load(Self.shakespeare).text
    }

    // MARK: CharTokenizer

    func testCharTokenizerRoundTripAndUnknownScalars() throws {
        let tokenizer = CharTokenizer(training: "hello, world\n")
        XCTAssertEqual(tokenizer.symbols.map { String($0) }, ["\n", " ", ",", "d", "e", "h", "l", "o", "r", "w"])
        XCTAssertEqual(tokenizer.vocabularySize, 11)
        XCTAssertEqual(tokenizer.encode("hold"), [5, 7, 6, 3])
        for text in ["", "hello", "world, hello\n\n", "lol"] {
            XCTAssertEqual(tokenizer.decode(tokenizer.encode(text)), text)
        }
        // Scalars the corpus never had: the unknown id, decoded as U+FFFD.
        let ids = tokenizer.encode("hé!☃")
        XCTAssertEqual(ids, [5, 10, 10, 10])
        XCTAssertEqual(tokenizer.decode(ids), "h\u{FFFD}\u{FFFD}\u{FFFD}")
        // A decomposed "é" (e + U+0301) is two scalars: two tokens, and back unchanged.
        let decomposed = CharTokenizer(training: "cafe\u{301}")
        XCTAssertEqual(decomposed.encode("cafe\u{301}").count, 5)
        XCTAssertEqual(decomposed.decode(decomposed.encode("cafe\u{301}")).unicodeScalars.map(\.value),
                       "cafe\u{301}".unicodeScalars.map(\.value))
        // Saved and read back: the same tokenizer.
        let back = try TokenizerFile.decode(tokenizer.serialized(), source: "t.json")
        XCTAssertEqual(back as? CharTokenizer, tokenizer)
    }

    func testCharTokenizerOnTinyShakespeare() throws {
        let text = try requireShakespeare()
        let tokenizer = CharTokenizer(training: text)
        XCTAssertEqual(tokenizer.symbols.count, 65, "Tiny Shakespeare has 65 distinct characters")
        let ids = tokenizer.encode(text)
        XCTAssertEqual(ids.count, 1_115_394, "ASCII: one token per byte")
        XCTAssertFalse(ids.contains(tokenizer.unknownId))
        XCTAssertEqual(tokenizer.decode(ids), text)
    }

    // MARK: BPETokenizer

    func testBPEChunksCoverEveryByteOnce() {
        let cases: [(String, [String])] = [
            ("To be, or not", ["To", " be", ",", " or", " not"]),
            ("a  b\n\n c", ["a", " ", " b", "\n\n", " c"]),
            ("x 42!? ", ["x", " 42", "!?", " "]),
            ("naïve", ["naïve"]),   // bytes ≥ 0x80 count as letters: the word stays whole
            ("", []),
        ]
        for (text, expected) in cases {
            let bytes = Array(text.utf8)
            let chunks = BPETokenizer.chunks(bytes)
            XCTAssertEqual(chunks.map { String(decoding: bytes[$0], as: UTF8.self) }, expected, text)
            XCTAssertEqual(chunks.map(\.count).reduce(0, +), bytes.count)
            for (a, b) in zip(chunks, chunks.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
        }
    }

    func testBPELearnsTheObviousMergesAndRoundTripsAnyBytes() throws {
        // Chunks "abab", " abab" ×2, " ab" ×2, " cd". Pair counts: a+b 8, " "+a 4, b+a 3.
        // Merge 1: a+b → 256. Then " "+256 (4) → 257, then 257+256 (2, from " abab") → 258.
        // Left: 256+256 once (in "abab") and " "+c, c+d once: no pair occurs twice, stop.
        let bpe = BPETokenizer(training: "abab abab abab ab ab cd", vocabularySize: 300)
        XCTAssertEqual(bpe.merges.map { [$0.left, $0.right] }, [[97, 98], [32, 256], [257, 256]])
        XCTAssertEqual(bpe.bytes(of: 258), Array(" abab".utf8))
        XCTAssertEqual(bpe.vocabularySize, 259, "stops when no pair occurs twice")
        XCTAssertEqual(bpe.encode(" abab"), [258])
        XCTAssertEqual(bpe.encode("abab ab"), [256, 256, 257], "merges replayed in training order")

        // Any byte sequence, valid UTF-8 or not, comes back exactly.
        let invalid: [UInt8] = [0xFF, 0x61, 0x62, 0xC3, 0x20, 0x80, 0x61, 0x62, 0x00]
        XCTAssertEqual(bpe.decodeBytes(bpe.encode(bytes: invalid)), invalid)
        XCTAssertEqual(bpe.decode(bpe.encode(bytes: [0x61, 0xFF])), "a\u{FFFD}", "invalid UTF-8 decodes to U+FFFD")
        for text in ["", "ab", "naïve café — 日本語 ✓", "cd cd\n\tabab"] {
            XCTAssertEqual(bpe.decode(bpe.encode(text)), text)
        }
        // Saved and read back: the same merges, the same encodings.
        let back = try XCTUnwrap(try TokenizerFile.decode(bpe.serialized(), source: "b.json") as? BPETokenizer)
        XCTAssertEqual(back.merges.map { [$0.left, $0.right] }, bpe.merges.map { [$0.left, $0.right] })
        XCTAssertEqual(back.encode("abab ab cd"), bpe.encode("abab ab cd"))
    }

    func testBPEOnTinyShakespeare() throws {
        let text = try requireShakespeare()
        let sample = String(text.prefix(100_000))
        let bpe = BPETokenizer(training: sample, vocabularySize: 1000)
        XCTAssertEqual(bpe.vocabularySize, 1000)
        XCTAssertEqual(BPETokenizer(training: sample, vocabularySize: 1000).merges.map { [$0.left, $0.right] },
                       bpe.merges.map { [$0.left, $0.right] }, "training is deterministic")
        let ids = bpe.encode(text)   // the whole play, most of it unseen in training
        XCTAssertEqual(bpe.decode(ids), text)
        let bytesPerToken = Double(text.utf8.count) / Double(ids.count)
        note("BPE 1000 trained on 100k characters: \(ids.count) tokens for \(text.utf8.count) bytes, \(bytesPerToken) bytes/token")
        // Whole common words become single tokens; 1,000 tokens should at least halve the length.
        XCTAssertGreaterThan(bytesPerToken, 2)
    }

    func testTokenizerFileErrorsNameTheFile() {
        for (text, says) in [("not json", "not a tokenizer"), ("{\"kind\": \"wordpiece\"}", "unknown tokenizer kind"),
                             ("{\"kind\": \"bpe\", \"merges\": [[300, 1]]}", "bpe merge 0"),
                             ("{\"kind\": \"char\", \"symbols\": [\"ab\"]}", "not one Unicode scalar")] {
            XCTAssertThrowsError(try TokenizerFile.decode(text, source: "dir/tok.json")) { error in
                XCTAssertTrue("\(error)".hasPrefix("dir/tok.json: "), "\(error)")
                XCTAssertTrue("\(error)".contains(says), "\(error)")
            }
        }
    }

    // MARK: Windows and the split

    func testWindowsTileTheStreamWhenStrideIsTheContext() {
        let tokens = Array(0..<103)
        for context in [1, 4, 10, 102] {
            let windows = TokenWindows(tokens: tokens, range: 0..<103, context: context, stride: context)
            XCTAssertEqual(windows.count, (103 - 1) / context)
            var targetCounts = [Int](repeating: 0, count: 103)
            for w in 0..<windows.count {
                let (x, y) = windows.batch([w])
                XCTAssertEqual(x, Array((w * context)..<(w * context + context)))
                XCTAssertEqual(y, x.map { $0 + 1 }, "targets are the inputs shifted by one")
                for t in y { targetCounts[t] += 1 }
            }
            // Every token that fits is a target exactly once; token 0 never is.
            let covered = windows.count * context
            XCTAssertEqual(Array(targetCounts[1...covered]), [Int](repeating: 1, count: covered), "context \(context)")
            XCTAssertEqual(targetCounts[0], 0)
        }
        // Too short for one window.
        XCTAssertEqual(TokenWindows(tokens: tokens, range: 0..<5, context: 5, stride: 1).count, 0)
        XCTAssertEqual(TokenWindows(tokens: tokens, range: 0..<6, context: 5, stride: 1).count, 1)
    }

    func testOverlappingWindowsAndBatchesStayInTheirSplit() {
        let tokens = Array(100..<200)   // values ≠ offsets, to catch an offset mix-up
        let split = TokenSplit(tokens: tokens, cut: 70, context: 8, stride: 3)
        XCTAssertEqual(split.train.count, (70 - 9) / 3 + 1)
        XCTAssertEqual(split.validation.count, (30 - 9) / 8 + 1)
        for w in 0..<split.train.count {
            let (x, y) = split.train.batch([w])
            XCTAssertEqual(x.first, 100 + 3 * w)
            XCTAssertLessThan(y.last!, 170, "a training target past the cut")
        }
        for w in 0..<split.validation.count {
            let (x, y) = split.validation.batch([w])
            XCTAssertGreaterThanOrEqual(x.first!, 170, "a validation input before the cut")
            XCTAssertLessThan(y.last!, 200)
        }
        // A batch is its windows one after another.
        let (x, y) = split.train.batch([2, 0])
        XCTAssertEqual(x, Array(106..<114) + Array(100..<108))
        XCTAssertEqual(y, Array(107..<115) + Array(101..<109))
        // The fraction form holds out the last 10%.
        let byFraction = TokenSplit(tokens: tokens, validationFraction: 0.1, context: 8, stride: 8)
        XCTAssertEqual(byFraction.validation.range, 90..<100)
    }

    // MARK: Corpus

    func testCorpusLoadingAndSplitting() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gpt-text-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }

        let good = folder.appendingPathComponent("good.txt")
        try Data([0x61, 0xFF, 0x62, 0xEF, 0xBF, 0xBD, 0x63]).write(to: good)   // a, invalid, b, a real U+FFFD, c
        let (text, replaced) = try TextCorpus.load(good)
        XCTAssertEqual(text, "a\u{FFFD}b\u{FFFD}c")
        XCTAssertEqual(replaced, 1, "only the invalid byte counts as replaced")

        let empty = folder.appendingPathComponent("empty.txt")
        try Data().write(to: empty)
        for (url, says) in [(empty, "is empty"), (folder.appendingPathComponent("missing.txt"), "no such file")] {
            XCTAssertThrowsError(try TextCorpus.load(url)) { error in
                XCTAssertEqual("\(error)", "\(url.path): \(says)")
            }
        }

        let (train, validation) = TextCorpus.split("abcdefghij", validationFraction: 0.2)
        XCTAssertEqual([train, validation], ["abcdefgh", "ij"])
        XCTAssertEqual(TextCorpus.split("ab☃d", validationFraction: 0.5).validation, "☃d", "splits scalars, not bytes")
    }

    /// The download against a local server (TinyHTTPServer, MNISTDownloadTests.swift):
    /// the real file is written; a short file or an error page is rejected and
    /// nothing is left behind; an unreachable server gives a one-line message.
    func testTinyShakespeareDownload() throws {
        _ = try requireShakespeare()   // skips when the file is absent
        let real = [UInt8](try Data(contentsOf: Self.shakespeare))
        let server = try TinyHTTPServer(routes: ["/input.txt": (200, real),
                                                 "/short.txt": (200, Array("First Citizen:\nBefore we proceed".utf8)),
                                                 "/gone.txt": (404, Array("<html>Not Found</html>".utf8))])
        defer { server.stop() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("gpt-download-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let target = folder.appendingPathComponent("tinyshakespeare/input.txt")

        for (path, says) in [("/short.txt", "download rejected: 32 bytes"), ("/gone.txt", "HTTP 404")] {
            XCTAssertThrowsError(try TinyShakespeare.download(to: target, from: URL(string: server.baseURL + path)!, timeout: 5)) {
                XCTAssertTrue("\($0)".contains(says), "\($0)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: target.path), "\(path) left a file behind")
        }
        let closed = try TinyHTTPServer(routes: [:])   // a port that was just listening and is now closed
        let unreachable = closed.port
        closed.stop()
        XCTAssertThrowsError(try TinyShakespeare.download(to: target, from: URL(string: "http://127.0.0.1:\(unreachable)/x")!,
                                                          timeout: 5)) {
            XCTAssertTrue("\($0)".contains("download failed") && "\($0)".contains("--text FILE"), "\($0)")
        }

        try TinyShakespeare.download(to: target, from: URL(string: server.baseURL + "/input.txt")!, timeout: 5)
        XCTAssertEqual([UInt8](try Data(contentsOf: target)), real)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: target.deletingLastPathComponent().path),
                       ["input.txt"], "no temporary file is left over")
    }

    func testSyntheticTextIsSeededAndStructured() {
        let a = SyntheticText.generate(characters: 5000, seed: 3)
        XCTAssertEqual(a, SyntheticText.generate(characters: 5000, seed: 3))
        XCTAssertNotEqual(a, SyntheticText.generate(characters: 5000, seed: 4))
        XCTAssertGreaterThanOrEqual(a.count, 5000)
        XCTAssertTrue(a.hasSuffix(".\n"), "whole lines")
        // Every copy line repeats its first half exactly.
        for line in a.split(separator: "\n") where line.contains(" and ") {
            let halves = line.dropLast().components(separatedBy: ", ")
            XCTAssertEqual(halves.count, 2, String(line))
            XCTAssertEqual(halves.first, halves.last, String(line))
        }
        note(a.prefix(160))
    }
}
