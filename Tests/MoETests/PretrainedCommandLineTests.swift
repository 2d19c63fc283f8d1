// pretrained-moe as a user runs it: the JSON interfaces other tools read, and
// bad input (a broken config.json, a missing or misshapen tensor, a missing or
// truncated shard, an unsupported tokenizer) as one-line errors with exit 1,
// never a trap. Each test copies a tiny fixture checkpoint into a temporary
// folder and breaks one thing.
import Foundation
import XCTest
@testable import MoE

final class PretrainedCommandLineTests: CommandLineTestCase {
    override class var program: String { "pretrained-moe" }

    static let fixtures = PretrainedParityTests.fixtures

    /// A copy of fixture `folder` in a fresh temporary directory.
    func copy(_ folder: String) throws -> URL {
        let target = try temporaryDirectory(folder).appendingPathComponent(folder)
        try FileManager.default.copyItem(at: Self.fixtures.appendingPathComponent(folder), to: target)
        return target
    }

    /// Runs `arguments` and checks: exit 1, one line on stderr containing every piece of `expected`.
    func expectError(_ arguments: [String], _ expected: [String], status: Int32 = 1, line: UInt = #line) throws {
        let outcome = try run(arguments, line: line)
        XCTAssertEqual(outcome.status, status, outcome.summary, line: line)
        XCTAssertEqual(outcome.reason, .exit, line: line)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.summary, line: line)
        for piece in expected {
            XCTAssertTrue(outcome.stderr.contains(piece), "stderr lacks '\(piece)': \(outcome.stderr)", line: line)
        }
    }

    func editConfig(_ dir: URL, _ edit: (inout [String: Any]) -> Void) throws {
        let url = dir.appendingPathComponent("config.json")
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }

    func testLogitsPrintsTheDocumentedJSON() throws {
        let outcome = try run(["logits", "--model", Self.fixtures.appendingPathComponent("olmoe").path, "--ids", "5,6,7"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["logits", "router_logits", "experts"])
        let logits = try XCTUnwrap(object["logits"] as? [[Double]])
        XCTAssertEqual(logits.count, 3)
        XCTAssertEqual(logits[0].count, 360)
        let router = try XCTUnwrap(object["router_logits"] as? [[[Double]]])
        XCTAssertEqual(router.count, 2); XCTAssertEqual(router[0].count, 3); XCTAssertEqual(router[0][0].count, 8)
        let experts = try XCTUnwrap(object["experts"] as? [[[Int]]])
        XCTAssertEqual(experts.count, 2); XCTAssertEqual(experts[1][2].count, 3)
        // Best first: the router logits of the chosen experts decrease.
        for (l, layer) in experts.enumerated() {
            for (t, chosen) in layer.enumerated() {
                let scores = chosen.map { router[l][t][$0] }
                XCTAssertEqual(scores, scores.sorted(by: >))
            }
        }
    }

    func testTokenizeAndDecode() throws {
        let model = Self.fixtures.appendingPathComponent("mixtral").path
        let encoded = try run(["tokenize", "--model", model, "--text", "To be"])
        XCTAssertEqual(encoded.status, 0, encoded.summary)
        let ids = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(encoded.stdout.utf8)) as? [String: Any])?["ids"] as? [Int])
        XCTAssertEqual(ids.first, 1, "Mixtral's template puts <s> first")
        let decoded = try run(["tokenize", "--model", model, "--decode", ids.dropFirst().map(String.init).joined(separator: ",")])
        XCTAssertEqual(decoded.status, 0, decoded.summary)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(decoded.stdout.utf8)) as? [String: Any])?["text"] as? String, "To be")
    }

    func testGenerateStreamsAndReportsSpeed() throws {
        let outcome = try run(["generate", "--model", Self.fixtures.appendingPathComponent("granitemoe-bf16").path,
                               "--prompt", "To be", "--max-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertTrue(outcome.stdout.hasPrefix("To be"))
        XCTAssertTrue(outcome.stdout.contains("prefill: 3 tokens"), outcome.stdout)   // "T", "o", " be"
        XCTAssertTrue(outcome.stdout.contains("tokens/s; decode: 4 tokens"), outcome.stdout)
        let again = try run(["generate", "--model", Self.fixtures.appendingPathComponent("granitemoe-bf16").path,
                             "--prompt", "To be", "--max-tokens", "5", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"])
        XCTAssertEqual(again.stdout.components(separatedBy: "\n\nprefill").first, outcome.stdout.components(separatedBy: "\n\nprefill").first,
                       "the same seed gives the same text")
    }

    func testUnknownModelType() throws {
        let dir = try copy("mixtral")
        try editConfig(dir) { $0["model_type"] = "llama" }
        try expectError(["logits", "--model", dir.path, "--ids", "1"],
                        ["config.json", "model_type 'llama'", "mixtral, olmoe, qwen2_moe, granitemoe"])
    }

    func testMissingAndMalformedConfigFields() throws {
        let dir = try copy("olmoe")
        try editConfig(dir) { $0["num_experts"] = nil }
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["config.json", "field 'num_experts' is missing"])
        try editConfig(dir) { $0["num_experts"] = "eight" }
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["config.json", "field 'num_experts' is a string"])
        try editConfig(dir) { $0["num_experts"] = 8; $0["num_experts_per_tok"] = 9 }
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["num_experts_per_tok 9", "8 experts"])
        try "{not json".write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["config.json", "not a JSON object"])
    }

    func testMissingTensorAndWrongShape() throws {
        let dir = try copy("qwen2_moe")
        // The config says wider experts than the file holds: the first expert tensor has the wrong shape.
        try editConfig(dir) { $0["moe_intermediate_size"] = 20 }
        try expectError(["logits", "--model", dir.path, "--ids", "1"],
                        ["model.layers.0.mlp.experts.0.gate_proj.weight", "has shape [16, 32], expected [20, 32]"])
        // One more layer than the file holds: its tensors are missing.
        try editConfig(dir) { $0["moe_intermediate_size"] = 16; $0["num_hidden_layers"] = 3 }
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["missing tensor 'model.layers.2.", "expected shape ["])
    }

    func testWrongDtype() throws {
        let dir = try copy("granitemoe")
        // Rewrite the header so one tensor claims dtype I32 (same byte size as F32).
        let url = dir.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: url)
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        let range = try XCTUnwrap(header.range(of: "\"F32\""))
        header.replaceSubrange(range, with: "\"I32\"")
        bytes.replaceSubrange(8..<(8 + headerLength), with: Data(header.utf8))
        try bytes.write(to: url)
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["model.safetensors", "has dtype I32", "F32, BF16, F16"])
    }

    func testMissingShardAndTruncatedShard() throws {
        let dir = try copy("olmoe-f16-sharded")
        let second = dir.appendingPathComponent("model-00002-of-00002.safetensors")
        let saved = try Data(contentsOf: second)
        try FileManager.default.removeItem(at: second)
        try expectError(["logits", "--model", dir.path, "--ids", "1"],
                        ["model.safetensors.index.json", "names shard 'model-00002-of-00002.safetensors'", "not in the folder"])
        try saved.prefix(saved.count - 100).write(to: second)
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["model-00002-of-00002.safetensors", "is truncated"])
        try saved.prefix(5).write(to: second)
        try expectError(["logits", "--model", dir.path, "--ids", "1"], ["model-00002-of-00002.safetensors", "too short"])
    }

    func testUnsupportedTokenizer() throws {
        let dir = try copy("olmoe")
        let url = dir.appendingPathComponent("tokenizer.json")
        var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var model = try XCTUnwrap(object["model"] as? [String: Any])
        model["type"] = "WordPiece"
        object["model"] = model
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        try expectError(["tokenize", "--model", dir.path, "--text", "hi"], ["tokenizer.json", "'model.type' is 'WordPiece'"])
        model["type"] = "BPE"; object["model"] = model; object["pre_tokenizer"] = ["type": "Whitespace"]
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        try expectError(["tokenize", "--model", dir.path, "--text", "hi"], ["tokenizer.json", "'pre_tokenizer' has type 'Whitespace'"])
    }

    func testDownloadOfflineIsOneLine() throws {
        // HF_ENDPOINT points at a loopback port nothing listens on; the child inherits it.
        let server = try RangeHTTPServer(files: [:])
        let port = server.port
        server.stop()
        setenv("HF_ENDPOINT", "http://127.0.0.1:\(port)", 1)
        defer { unsetenv("HF_ENDPOINT") }
        let dir = try temporaryDirectory("download")
        try expectError(["download", "owner/model", "--to", dir.appendingPathComponent("m").path],
                        ["http://127.0.0.1:\(port)/owner/model/resolve/main/config.json", "download failed"])
        try expectError(["download"], ["download needs one repository name"], status: 2)
    }

    func testBadArguments() throws {
        let model = Self.fixtures.appendingPathComponent("olmoe").path
        try expectError(["logits", "--model", model, "--ids", "1,x"], ["--ids", "'x'"], status: 2)
        try expectError(["logits", "--model", model, "--ids", "1,360"], ["token id 360", "0..<360"])
        try expectError(["frobnicate"], ["unknown command 'frobnicate'"], status: 2)
        try expectError(["generate", "--model", model, "--prompt", "To be", "--max-tokens", "1000"],
                        ["--max-tokens 1000", "256 positions"], status: 2)
        try expectError(["logits", "--model", "/nonexistent-folder", "--ids", "1"], ["config.json", "no such file"])
    }
}
