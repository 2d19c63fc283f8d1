// BPE on text without whitespace. The pre-tokenizer used to make such a text
// one chunk, and both training (each merge rewrote the chunk) and encoding
// (each pass rescanned it) grew with the square of its length: 100 KB took
// 27 s, 300 KB 101 s. Chunks are now at most 64 bytes and a merge updates only
// the pairs it touches, so the corpus below takes well under a second; were
// either quadratic again, this test would take minutes, not fail quietly.
import XCTest
@testable import MoE

final class BPELongChunkTests: XCTestCase {
    /// 120 KB of letters and punctuation with no whitespace at all: words of a
    /// small invented vocabulary, run together, so there is structure to learn.
    private func noSpaceCorpus() -> String {
        var rng = Xoshiro256(seed: 3)
        let words = ["tobe", "ornot", "thatis", "thequestion", "whether", "tis", "nobler", "inthemind", "tosuffer",
                     "slings", "arrows", "outrageous", "fortune", ",", ".", ";", "ROMEO:", "JULIET:", "42", "1599"]
        var text = ""
        while text.utf8.count < 120_000 { text += words[rng.below(words.count)] }
        return text
    }

    func testRunsLongerThanTheCapAreCutIntoPiecesOf64Bytes() {
        let bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 200) + Array(" bb".utf8)
        XCTAssertEqual(BPETokenizer.chunks(bytes), [0..<64, 64..<128, 128..<192, 192..<200, 200..<203])
        // Ordinary text is untouched: no chunk of Tiny Shakespeare-like prose comes near the cap.
        let prose = Array("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.".utf8)
        XCTAssertTrue(BPETokenizer.chunks(prose).allSatisfy { $0.count <= 16 })
    }

    func testTextWithoutWhitespaceTrainsAndEncodesInLinearTime() throws {
        let text = noSpaceCorpus()
        let bytes = Array(text.utf8)
        let chunks = BPETokenizer.chunks(bytes)
        XCTAssertEqual(chunks.map(\.count).reduce(0, +), bytes.count, "the chunks cover every byte")
        XCTAssertLessThanOrEqual(chunks.map(\.count).max() ?? 0, BPETokenizer.maxChunk)
        XCTAssertGreaterThan(chunks.count, bytes.count / 64, "the runs were cut")

        let bpe = BPETokenizer(training: text, vocabularySize: 2_000)
        XCTAssertGreaterThan(bpe.merges.count, 500, "the structure was learned")
        XCTAssertLessThanOrEqual((256..<bpe.vocabularySize).map { bpe.bytes(of: $0).count }.max() ?? 0, BPETokenizer.maxChunk)
        let ids = bpe.encode(text)
        XCTAssertEqual(bpe.decode(ids), text)
        XCTAssertLessThan(ids.count, bytes.count / 3, "merges apply across the whole text")
        // The tokenizer saved and read back encodes the same way.
        let reread = try TokenizerFile.decode(bpe.serialized(), source: "bpe.json", expectedVocabularySize: bpe.vocabularySize)
        XCTAssertEqual(reread.encode(String(text.prefix(5_000))), bpe.encode(String(text.prefix(5_000))))
    }

    /// Encoding replays the merges lowest rank first; the incremental encoder
    /// must split every chunk exactly as applying whole merges in order does.
    func testIncrementalEncodingMatchesReplayingTheMergesInOrder() {
        let text = noSpaceCorpus()
        let bpe = BPETokenizer(training: String(text.prefix(30_000)), vocabularySize: 600)
        let bytes = Array(text.utf8.suffix(20_000))
        for range in BPETokenizer.chunks(bytes) {
            var reference = bytes[range].map(Int.init)
            for (i, m) in bpe.merges.enumerated() { reference = BPETokenizer.merge(reference, m, into: 256 + i) }
            XCTAssertEqual(bpe.encodeChunk(bytes[range]), reference, "chunk \(range)")
        }
    }
}
