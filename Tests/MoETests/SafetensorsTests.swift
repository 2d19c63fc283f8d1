// Tests for Safetensors and AtomicFile.
//
// Three kinds of check: round trips (what we write, we read back bit for bit),
// one file compared byte by byte with bytes worked out by hand from the format
// description, and hostile input (every malformed case named in
// Safetensors.swift, then thousands of random corruptions) that must end in a
// `SafetensorsError`, never a crash.

import Foundation
import XCTest
import MoE

final class SafetensorsTests: XCTestCase {

    // MARK: Helpers

    /// A fresh empty directory, removed after the test.
    private func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("safetensors-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }

    /// A file with the given header text and data bytes; the length prefix is
    /// the header's true length unless `declaredLength` says otherwise.
    private func file(_ header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        file(Array(header.utf8), data: data, declaredLength: declaredLength)
    }

    private func file(_ header: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        let length = declaredLength ?? UInt64(header.count)
        let prefix = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
        return Data(prefix + header + data)
    }

    /// Asserts that decoding fails with a `SafetensorsError` whose message contains `expected`.
    private func assertRejects(_ bytes: Data, _ expected: String, line: UInt = #line) {
        do {
            let decoded = try Safetensors.decode(bytes, source: "bad.safetensors")
            XCTFail("accepted a malformed file, read \(decoded.order)", line: line)
        } catch let error as SafetensorsError {
            XCTAssertTrue(error.description.hasPrefix("bad.safetensors: "), error.description, line: line)
            XCTAssertTrue(error.problem.contains(expected),
                          "expected '\(expected)' in: \(error.description)", line: line)
            XCTAssertFalse(error.description.contains("\n"), "error spans lines", line: line)
        } catch {
            XCTFail("wrong error type: \(error)", line: line)
        }
    }

    /// A deterministic generator (SplitMix64), so a failing fuzz case can be replayed.
    private struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    // MARK: Round trips

    func testRoundTripOfManyShapesIsBitExact() throws {
        var generator = SeededGenerator(state: 1)
        let shapes: [[Int]] = [[], [0], [1], [3], [2, 3], [2, 0, 4], [1, 1, 1, 5], [7, 9]]
        var tensors: [(name: String, tensor: Tensor)] = []
        for (index, shape) in shapes.enumerated() {
            let count = shape.reduce(1, *)
            let values = (0..<count).map { _ in Float.random(in: -10...10, using: &generator) }
            tensors.append(("layer\(index).weight", Tensor(shape: shape, data: values)))
        }
        // Values whose bits are easy to lose: signed zero, infinities, NaN, a subnormal.
        tensors.append(("special", Tensor(shape: [6], data: [-0.0, .infinity, -.infinity, .nan,
                                                             .leastNonzeroMagnitude, .greatestFiniteMagnitude])))
        // Names in an order that is not sorted, to check that `order` keeps it.
        tensors.append(("a.first.in.sort", Tensor(shape: [], data: [42])))
        let metadata = ["format": "pt", "quote\"back\\slash": "line\nbreak\ttab", "ünïcødé": "专家 🧠", "": ""]

        let bytes = try Safetensors.encode(tensors, metadata: metadata)
        let decoded = try Safetensors.decode(bytes, source: "memory")

        XCTAssertEqual(decoded.order, tensors.map(\.name))
        XCTAssertEqual(decoded.metadata, metadata)
        for (name, tensor) in tensors {
            let read = try decoded.tensor(name, shape: tensor.shape)
            XCTAssertEqual(read.data.map(\.bitPattern), tensor.data.map(\.bitPattern), name)
        }
        // The data area starts on an 8-byte boundary (the header is padded).
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        XCTAssertEqual(headerLength % 8, 0)
    }

    func testEmptyFileRoundTrips() throws {
        let decoded = try Safetensors.decode(try Safetensors.encode([]), source: "empty")
        XCTAssertTrue(decoded.tensors.isEmpty)
        XCTAssertTrue(decoded.metadata.isEmpty)
    }

    /// Every byte of a one-tensor file, written out from the format description:
    /// tensor "a" = [1, -2], no metadata.
    func testBytesMatchTheSpecificationByHand() throws {
        let json = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#  // 54 bytes
        var expected: [UInt8] = [56, 0, 0, 0, 0, 0, 0, 0]   // N = 54 + 2 spaces of padding = 56
        expected += Array(json.utf8) + [0x20, 0x20]
        expected += [0x00, 0x00, 0x80, 0x3F]               // 1.0  = 0x3F800000, little-endian
        expected += [0x00, 0x00, 0x00, 0xC0]               // -2.0 = 0xC0000000
        XCTAssertEqual(json.utf8.count, 54)

        let bytes = try Safetensors.encode([("a", Tensor(shape: [2], data: [1, -2]))])
        XCTAssertEqual(Array(bytes), expected)
    }

    /// A scalar and metadata, by hand: {"__metadata__":{"k":"v"},"s":{… "shape":[] …}}.
    func testScalarWithMetadataMatchesBytesByHand() throws {
        let json = #"{"__metadata__":{"k":"v"},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#
        XCTAssertEqual(json.utf8.count, 78)  // padded to 80
        let expected: [UInt8] = [80, 0, 0, 0, 0, 0, 0, 0] + Array(json.utf8) + [0x20, 0x20]
            + [0x00, 0x00, 0x60, 0x40]  // 3.5 = 0x40600000
        let bytes = try Safetensors.encode([("s", Tensor(shape: [], data: [3.5]))], metadata: ["k": "v"])
        XCTAssertEqual(Array(bytes), expected)
    }

    func testTensorLookupErrorsNameFileTensorAndShapes() throws {
        let bytes = try Safetensors.encode([("moe.gate.weight", Tensor.zeros([8, 128]))])
        let decoded = try Safetensors.decode(bytes, source: "run.safetensors")
        XCTAssertThrowsError(try decoded.tensor("moe.gate.weight", shape: [8, 256])) { error in
            XCTAssertEqual("\(error)", "run.safetensors: tensor 'moe.gate.weight' has shape [8, 128], expected [8, 256]")
        }
        XCTAssertThrowsError(try decoded.tensor("moe.expert.0", shape: [1])) { error in
            XCTAssertEqual("\(error)", "run.safetensors: no tensor 'moe.expert.0' (the file holds 'moe.gate.weight')")
        }
    }

    func testEncodeRefusesBadNames() {
        let t = Tensor.zeros([1])
        XCTAssertThrowsError(try Safetensors.encode([("", t)]))
        XCTAssertThrowsError(try Safetensors.encode([("w", t), ("w", t)]))
        XCTAssertThrowsError(try Safetensors.encode([("__metadata__", t)]))
    }

    // MARK: Malformed files

    func testMalformedLengthPrefix() {
        assertRejects(Data(), "too short")
        assertRejects(Data([1, 2, 3, 4, 5]), "too short")
        assertRejects(file("{}", declaredLength: UInt64.max), "absurd")
        assertRejects(file("{}", declaredLength: 100_000_001), "absurd")
        assertRejects(file("{}", declaredLength: 3), "larger than")
    }

    func testMalformedHeaderText() {
        assertRejects(file([0x7B, 0xFF, 0x7D]), "UTF-8")                      // {\xFF}
        assertRejects(file([0x7B, 0xED, 0xA0, 0x80, 0x7D]), "UTF-8")          // an encoded surrogate
        assertRejects(file("[]"), "does not start with '{'")
        assertRejects(file(" {}"), "does not start with '{'")
        assertRejects(file(#"{"a":"#), "not valid JSON")
        assertRejects(file(#"{"a":1} x"#), "not valid JSON")
        assertRejects(file(#"{"a":01}"#), "not valid JSON")
        assertRejects(file(#"{"a\u12":1}"#), "not valid JSON")
        assertRejects(file(#"{"\uD800":1}"#), "not valid JSON")                 // lone surrogate
        assertRejects(file("{\"a\":\"tab\there\"}"), "not valid JSON")          // raw control character
        assertRejects(file("{\"a\":" + String(repeating: "[", count: 100_000)), "nesting")
    }

    func testMalformedEntries() {
        let good = #""dtype":"F32","shape":[1],"data_offsets":[0,4]"#
        let four: [UInt8] = [0, 0, 0, 0]
        assertRejects(file(#"{"a":5}"#), "entry 'a' is a number, expected an object")
        assertRejects(file(#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, data: four), "has no 'dtype'")
        assertRejects(file(#"{"a":{"dtype":"F32","data_offsets":[0,4]}}"#, data: four), "has no 'shape'")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1]}}"#, data: four), "has no 'data_offsets'")
        assertRejects(file(#"{"a":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}"#, data: four), "'dtype' is a number")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#, data: four), "'shape' is a string")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, data: four), "holds true")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, data: four), "holds 1.0")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":{}}}"#, data: four), "'data_offsets' is an object")
        assertRejects(file(#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, data: four),
                      "tensor 'a' has dtype F16; only F32 is supported")
        assertRejects(file(#"{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#, data: four), "dtype BF16")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: four), "holds -1")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#, data: four),
                      "holds 99999999999999999999")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, data: four),
                      "too large")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#, data: four), "do not fit")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#, data: four), "do not fit")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, data: four), "has 3 numbers")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, data: four), "needs 8 bytes")
        assertRejects(file(#"{"":{\#(good)}}"#, data: four), "name is empty")
        assertRejects(file(#"{"a":{\#(good)},"a":{\#(good)}}"#, data: four), "'a' appears twice")
        assertRejects(file(#"{"__metadata__":[],"a":{\#(good)}}"#, data: four), "'__metadata__' is an array")
        assertRejects(file(#"{"__metadata__":{"k":1},"a":{\#(good)}}"#, data: four), "metadata 'k' is a number")
    }

    func testMalformedLayouts() {
        let twelve = [UInt8](repeating: 0, count: 12)
        func two(_ a: String, _ b: String) -> String {
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":\#(a)},"b":{"dtype":"F32","shape":[2],"data_offsets":\#(b)}}"#
        }
        assertRejects(file(two("[0,8]", "[4,12]"), data: twelve), "overlap")
        assertRejects(file(two("[0,8]", "[0,8]"), data: [UInt8](twelve.prefix(8))), "overlap")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                           data: twelve), "bytes 4..<8 of the data area belong to no tensor")
        assertRejects(file(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0, 9]),
                      "bytes 4..<5 of the data area belong to no tensor")
        assertRejects(file("{}", data: [1]), "belong to no tensor")
    }

    func testTolerantOfWhatOtherWritersDo() throws {
        // Unpadded headers, whitespace, escaped names and tensors listed out of
        // offset order are all legal.
        let header = #"{ "b\u00e9" : {"dtype":"F32", "shape":[1], "data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let decoded = try Safetensors.decode(file(header, data: [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40]), source: "x")
        XCTAssertEqual(decoded.order, ["bé", "a"])
        XCTAssertEqual(decoded.tensors["a"]?.data, [1])
        XCTAssertEqual(decoded.tensors["bé"]?.data, [2])
    }

    /// Random corruptions of a valid file must each be either read or refused: never a crash.
    func testRandomCorruptionNeverCrashes() throws {
        let valid = try Safetensors.encode([("w1", Tensor(shape: [3, 4], repeating: 0.5)),
                                            ("b1", Tensor(shape: [4], repeating: -1)),
                                            ("s", Tensor(shape: [], data: [2]))],
                                           metadata: ["epoch": "3"])
        var generator = SeededGenerator(state: 2024)
        var refused = 0
        let trials = 3000
        for trial in 0..<trials {
            var bytes = [UInt8](valid)
            switch trial % 4 {
            case 0:  // flip a few random bytes anywhere
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            case 1:  // truncate
                bytes.removeLast(Int.random(in: 1...bytes.count, using: &generator))
            case 2:  // flip bits in the header length and header, where the structure lives
                let index = Int.random(in: 0..<min(bytes.count, 120), using: &generator)
                bytes[index] ^= 1 << UInt8.random(in: 0...7, using: &generator)
            default:  // insert random bytes
                let junk = (0..<Int.random(in: 1...8, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                bytes.insert(contentsOf: junk, at: Int.random(in: 0...bytes.count, using: &generator))
            }
            do {
                _ = try Safetensors.decode(Data(bytes), source: "fuzz")
            } catch is SafetensorsError {
                refused += 1
            }
        }
        // Most corruptions are caught; some (a flipped float bit) are legitimately valid files.
        XCTAssertGreaterThan(refused, trials / 2)
    }

    // MARK: Files and atomic writes

    func testWriteAndReadFileThroughNewDirectories() throws {
        let directory = try temporaryDirectory()
        let url = directory.appendingPathComponent("runs/2024/model.safetensors")
        try Safetensors.write([("w", Tensor(shape: [2, 2], data: [1, 2, 3, 4]))], metadata: ["step": "7"], to: url)
        let read = try Safetensors.read(from: url)
        XCTAssertEqual(read.tensors["w"], Tensor(shape: [2, 2], data: [1, 2, 3, 4]))
        XCTAssertEqual(read.metadata, ["step": "7"])
        XCTAssertEqual(read.source, url.path)
    }

    func testReadingAMissingFileNamesThePath() throws {
        let url = try temporaryDirectory().appendingPathComponent("absent.safetensors")
        XCTAssertThrowsError(try Safetensors.read(from: url)) { error in
            XCTAssertEqual("\(error)", url.path + ": no such file")
        }
    }

    func testAtomicWriteReplacesAndLeavesNoTemporaryFiles() throws {
        let directory = try temporaryDirectory()
        let url = directory.appendingPathComponent("notes.txt")
        try AtomicFile.write(Data("first version, longer than the second\n".utf8), to: url)
        try AtomicFile.write(Data("second\n".utf8), to: url)
        XCTAssertEqual(try Data(contentsOf: url), Data("second\n".utf8))
        try AtomicFile.write(Data(), to: url)
        XCTAssertEqual(try Data(contentsOf: url), Data())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["notes.txt"])
    }

    func testAtomicWriteFailureIsOneLineNamingThePath() throws {
        let directory = try temporaryDirectory()
        let blocker = directory.appendingPathComponent("plain-file")
        try AtomicFile.write(Data("x".utf8), to: blocker)
        // The parent "directory" is a file, so neither mkdir nor the write can work.
        let url = blocker.appendingPathComponent("inside.txt")
        XCTAssertThrowsError(try AtomicFile.write(Data("y".utf8), to: url)) { error in
            XCTAssertTrue(error is AtomicFileError)
            XCTAssertTrue("\(error)".hasPrefix(blocker.path), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["plain-file"])
    }
}
