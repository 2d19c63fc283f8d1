// gpt-moe route and specialize, run as a user runs them (CommandLineHarness.swift):
// the routing view's JSON against what each MoELayer actually did for the same
// checkpoint and prompt, the specialization report, the stability record of
// `train`, and bad input as one line.
import Foundation
import XCTest
@testable import MoE

final class GPTAnalysisCommandLineTests: CommandLineTestCase {
    override class var program: String { "gpt-moe" }

    /// One tiny MoE model in blocks 0 and 1, trained once for every test here (seconds).
    private static var trained: URL?
    private func checkpoint() throws -> URL {
        if let url = Self.trained { return url }
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("gpt-moe-analysis-\(UUID().uuidString)")
        let outcome = try run(["--synthetic", "--synthetic-chars", "6000", "--layers", "2", "--width", "16", "--heads", "2",
                               "--context", "16", "--batch-size", "4", "--experts", "4", "--top-k", "2",
                               "--moe-layers", "all", "--steps", "6", "--eval-interval", "3", "--eval-windows", "8",
                               "--probe-windows", "3", "--length", "5", "--threads", "1", "--out", out.path])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        // The probe's record is in summary.json: one curve per MoE block, 1 at the last evaluation.
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let model = try XCTUnwrap((summary["models"] as? [[String: Any]])?.first)
        let stability = try XCTUnwrap(model["routing_stability"] as? [String: Any], "summary.json has no routing_stability")
        XCTAssertEqual(stability["probe_windows"] as? Int, 3)
        let blocks = try XCTUnwrap(stability["blocks"] as? [[String: Any]])
        XCTAssertEqual(blocks.map { $0["block"] as? Int }, [0, 1])
        for b in blocks {
            XCTAssertEqual(b["steps"] as? [Int], [0, 3, 6])
            XCTAssertEqual((b["agreement_with_final"] as? [Double])?.last, 1)
            XCTAssertNotNil(b["first_stable_step"] as? Int)
        }
        _ = try readSVG(out.appendingPathComponent("routing_stability.svg"))
        Self.trained = out.appendingPathComponent("baseline.safetensors")
        return Self.trained!
    }

    func testRouteJSONIsWhatEveryMoELayerDid() throws {
        let file = try checkpoint()
        let prompt = "the cat sat"
        let outcome = try run(["route", "--checkpoint", file.path, "--prompt", prompt, "--json", "--threads", "1"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any])
        let tokens = try XCTUnwrap(json["tokens"] as? [String])
        let layers = try XCTUnwrap(json["layers"] as? [[String: Any]])

        // The same checkpoint, the same forward pass, read straight from each layer.
        let (model, tokenizer, _) = try GPTCheckpoint.load(from: file)
        let ids = tokenizer.encode(prompt)
        XCTAssertEqual(tokens, ids.map { tokenizer.decode([$0]) })
        model.setMode(training: false, progress: 1)
        _ = model.forward(tokens: ids, batch: 1)
        XCTAssertEqual(layers.count, model.moeLayers.count)
        for (entry, (block, moe)) in zip(layers, model.moeLayers) {
            XCTAssertEqual(entry["layer"] as? Int, block)
            let experts = try XCTUnwrap(entry["experts"] as? [[Int]])
            let weights = try XCTUnwrap(entry["weights"] as? [[Double]])
            let r = try XCTUnwrap(moe.lastRouting)
            XCTAssertEqual(r.k, 2)
            for t in ids.indices {
                // Highest weight first, as the view lists them.
                let slots = (0..<r.k).map { (r.experts[t * r.k + $0], r.weights.data[t * r.k + $0]) }.sorted { $0.1 > $1.1 }
                XCTAssertEqual(experts[t], slots.map(\.0), "block \(block), token \(t)")
                XCTAssertEqual(weights[t].map { Float($0) }, slots.map(\.1), "block \(block), token \(t)")
            }
        }

        // The terminal view: plain text off a terminal, every line within 80 columns.
        let grid = try run(["route", "--checkpoint", file.path, "--prompt", String(repeating: "ab ", count: 5), "--threads", "1"])
        XCTAssertEqual(grid.status, 0, grid.summary)
        XCTAssertFalse(grid.stdout.contains("\u{1B}["), "colour codes in a pipe")
        XCTAssertTrue(grid.stdout.contains("block 0") && grid.stdout.contains("block 1"), grid.stdout)
        for line in grid.stdout.split(separator: "\n") where line.hasPrefix("token") || line.hasPrefix("block") {
            XCTAssertLessThanOrEqual(line.count, 80, String(line))
        }
        let svg = try temporaryDirectory("route").appendingPathComponent("route.svg")
        XCTAssertEqual(try run(["route", "--checkpoint", file.path, "--prompt", "ab", "--svg", svg.path]).status, 0)
        XCTAssertTrue(try readSVG(svg).text.contains("top-1 expert"))
    }

    func testSpecializeReportsMutualInformationBesideItsChanceLevel() throws {
        let file = try checkpoint()
        let dir = try temporaryDirectory("domains")
        let texts = [SyntheticText.generate(characters: 600, seed: 1), String(repeating: "abc abc. ", count: 60)]
        try Data(texts[0].utf8).write(to: dir.appendingPathComponent("first.txt"))
        try Data(texts[1].utf8).write(to: dir.appendingPathComponent("second.txt"))
        let text = dir.appendingPathComponent("train.txt").path
        try Data(SyntheticText.generate(characters: 6000, seed: 0).utf8).write(to: URL(fileURLWithPath: text))
        let domains = dir.appendingPathComponent("d")
        try FileManager.default.createDirectory(at: domains, withIntermediateDirectories: true)
        for name in ["first.txt", "second.txt"] {
            try FileManager.default.moveItem(at: dir.appendingPathComponent(name), to: domains.appendingPathComponent(name))
        }
        let out = dir.appendingPathComponent("out")
        let outcome = try run(["specialize", "--checkpoint", file.path, "--domains", domains.path, "--text", text,
                               "--permutations", "50", "--out", out.path, "--threads", "1"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        for needle in ["I(domain; expert) = ", "I(domain; expert | token) = ", "I(band; expert) = ", "chance", "first", "second",
                       "rare", "common", "MoE block 0", "MoE block 1"] {
            XCTAssertTrue(outcome.stdout.contains(needle), "no '\(needle)' in:\n\(outcome.stdout)")
        }
        let summary = try readJSON(out.appendingPathComponent("specialization.json"))
        let byDomain = try XCTUnwrap(summary["by_domain"] as? [[String: Any]])
        XCTAssertEqual(byDomain.count, 2)
        let mi = try XCTUnwrap(byDomain[0]["mutual_information"] as? [String: Any])
        XCTAssertEqual(mi["permutations"] as? Int, 50)
        XCTAssertNotNil(mi["chance_mi_bits"] as? Double)
        // The table counts every routed token of both domains once.
        let counts = try XCTUnwrap(byDomain[0]["counts"] as? [[Int]])
        let tokenizer = try GPTCheckpoint.load(from: file).tokenizer
        XCTAssertEqual(counts.joined().reduce(0, +), texts.reduce(0) { $0 + tokenizer.encode($1).count })
        _ = try readSVG(out.appendingPathComponent("domain_expert_block0.svg"))

        // A checkpoint against itself: the same partition, so I = H and every token agrees.
        let same = try run(["specialize", "--checkpoint", file.path, "--domains", domains.path, "--text", text,
                            "--permutations", "10", "--against", file.path, "--threads", "1"])
        XCTAssertEqual(same.status, 0, same.summary)
        XCTAssertEqual(same.stdout.components(separatedBy: "100.0% of tokens agree after renumbering").count, 3, same.stdout)
    }

    func testBadInputIsOneLine() throws {
        let file = try checkpoint()
        let dir = try temporaryDirectory("bad")
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let binary = dir.appendingPathComponent("binary")
        try FileManager.default.createDirectory(at: binary, withIntermediateDirectories: true)
        try Data("fine text".utf8).write(to: binary.appendingPathComponent("a.txt"))
        try Data([0x66, 0xFF, 0xFE, 0x80]).write(to: binary.appendingPathComponent("b.txt"))
        let cases: [(arguments: [String], status: Int32, says: String)] = [
            (["route", "--checkpoint", file.path, "--prompt", String(repeating: "a", count: 17)], 1, "more than the context of 16"),
            (["route", "--checkpoint", file.path, "--prompt", ""], 1, "--prompt is empty"),
            (["route", "--checkpoint", dir.appendingPathComponent("none.safetensors").path, "--prompt", "a"], 1, "none.safetensors"),
            (["specialize", "--checkpoint", file.path, "--domains", empty.path], 1, "no domain files"),
            (["specialize", "--checkpoint", file.path, "--domains", binary.path], 1, "b.txt: not valid UTF-8"),
            (["specialize", "--checkpoint", file.path, "--domains", dir.appendingPathComponent("nowhere").path], 1, "no such folder"),
            (["route", "--checkpoint", file.path], 2, "route needs --prompt"),
            (["specialize", "--checkpoint", file.path], 2, "specialize needs --domains"),
            (["route", "--prompt", "a"], 2, "route needs --checkpoint"),
            (["route", "--checkpoint", file.path, "--prompt", "a", "--steps", "3"], 2, "'--steps'"),
            (["specialize", "--checkpoint", file.path, "--domains", empty.path, "--bands", "1"], 2, "--bands"),
        ]
        for (arguments, status, says) in cases {
            let outcome = try run(arguments)
            let what = "gpt-moe \(arguments.joined(separator: " "))"
            XCTAssertEqual(outcome.status, status, "\(what)\n\(outcome.summary)")
            XCTAssertEqual(outcome.stdout, "", what)
            let first = outcome.errorLines.first ?? ""
            print("\(what) → \(first)")
            XCTAssertTrue(first.hasPrefix("gpt-moe: ") && first.contains(says), "\(what): \(first)")
            if status == 1 { XCTAssertEqual(outcome.errorLines.count, 1, "\(what): \(outcome.stderr)") }
        }
    }
}
