// pretrained-moe route and specialize on the tiny fixture checkpoints
// (Tests/MoETests/Fixtures/pretrained/): the routing they report is the one
// transformers computed, and the shared analysis (Sources/MoE/Analysis/) runs
// on it as it runs on gpt-moe's.
//
//   * For every fixture and every recorded prompt, `route --json`'s experts are
//     the experts transformers chose (reference.json), in its order, and its
//     weights are exactly the weights our routers (TopKGating) returned, and
//     within 1e-4 of the family's rule applied to transformers' router logits:
//     softmax then top-K (renormalized for mixtral and norm_topk_prob) or, for
//     granitemoe, top-K then softmax over the K.
//   * specialize on a small temporary domains folder runs, and each layer's
//     I(domain; expert) lies in [0, log2(min(#domains, #experts))].
//   * Bad input: an empty domains folder, a non-UTF-8 file, a prompt longer than
//     the context: one line, exit 1; a missing --prompt / --domains: exit 2.
import Foundation
import XCTest
@testable import MoE

final class PretrainedRoutingTests: CommandLineTestCase {
    override class var program: String { "pretrained-moe" }

    static let fixtures = PretrainedParityTests.fixtures

    func reference(_ folder: String) throws -> [String: Any] {
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent(folder).appendingPathComponent("reference.json"))
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The family's combine weights from transformers' router logits of one token.   [E] → [K]
    func expectedWeights(logits: [Double], chosen: [Int], config: PretrainedConfig) -> [Double] {
        func softmax(_ x: [Double]) -> [Double] {
            let m = x.max()!, e = x.map { Foundation.exp($0 - m) }, s = e.reduce(0, +)
            return e.map { $0 / s }
        }
        if config.family == .granitemoe { return softmax(chosen.map { logits[$0] }) }
        let p = softmax(logits), picked = chosen.map { p[$0] }
        if config.renormalizeTopK { let s = picked.reduce(0, +); return picked.map { $0 / s } }
        return picked
    }

    func testRouteJSONIsTheRoutingTransformersChose() throws {
        for folder in PretrainedParityTests.folders {
            let directory = Self.fixtures.appendingPathComponent(folder)
            let model = try PretrainedModel(directory: directory)
            let tokenizer = try HubTokenizer.load(directory: directory)
            let prompts = try XCTUnwrap(try reference(folder)["prompts"] as? [[String: Any]])
            for prompt in prompts {
                let text = try XCTUnwrap(prompt["text"] as? String)
                let ids = try XCTUnwrap(prompt["ids"] as? [Int])
                XCTAssertEqual(tokenizer.encode(text), ids, "\(folder): \(text)")
                let referenceExperts = try XCTUnwrap(prompt["experts"] as? [[[Int]]])          // [L][T][K]
                let referenceLogits = try XCTUnwrap(prompt["router_logits"] as? [[[Double]]])   // [L][T][E]

                let outcome = try run(["route", "--model", directory.path, "--prompt", text, "--json"])
                XCTAssertEqual(outcome.status, 0, outcome.summary)
                let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as? [String: Any])
                XCTAssertEqual(Set(object.keys), ["tokens", "layers"])
                let tokens = try XCTUnwrap(object["tokens"] as? [String])
                XCTAssertEqual(tokens, ids.map { tokenizer.decode([$0]) })
                let layers = try XCTUnwrap(object["layers"] as? [[String: Any]])
                XCTAssertEqual(layers.count, model.config.layerCount, folder)

                // What our routers returned, in process, for the same ids.
                model.reset()
                let forward = try model.forward(ids)
                model.reset()
                for (l, layer) in layers.enumerated() {
                    XCTAssertEqual(Set(layer.keys), ["layer", "experts", "weights"])
                    XCTAssertEqual(layer["layer"] as? Int, l)
                    let experts = try XCTUnwrap(layer["experts"] as? [[Int]])
                    let weights = try XCTUnwrap(layer["weights"] as? [[Double]])
                    XCTAssertEqual(experts, referenceExperts[l], "\(folder) layer \(l): \(text)")
                    let routing = forward.routings[l], k = routing.k
                    for t in 0..<ids.count {
                        let ours = (0..<k).map { routing.weights.data[t * k + $0] }
                        XCTAssertEqual(weights[t].map { Float($0) }, ours, "\(folder) layer \(l) token \(t)")
                        let expected = expectedWeights(logits: referenceLogits[l][t], chosen: referenceExperts[l][t],
                                                       config: model.config)
                        for (w, e) in zip(weights[t], expected) { XCTAssertEqual(w, e, accuracy: 1e-4, "\(folder) layer \(l) token \(t)") }
                    }
                }
            }
        }
    }

    func testRouteGridAndSVG() throws {
        let directory = Self.fixtures.appendingPathComponent("olmoe")
        let svg = try temporaryDirectory("route").appendingPathComponent("route.svg")
        let outcome = try run(["route", "--model", directory.path, "--prompt", "To be, or not to be", "--svg", svg.path])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertTrue(outcome.stdout.contains("9 tokens through MoE layers 0, 1 (8 experts, top-3)"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("layer 0"), outcome.stdout)
        XCTAssertFalse(outcome.stdout.contains("\u{1B}["), "colour only on a terminal")
        // The grid (between the heading and the mean weights) fits 80 columns.
        let lines = outcome.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let grid = lines.dropFirst().prefix { !$0.hasPrefix("Mean top-1 weight") }
        XCTAssertTrue(grid.contains { $0.hasPrefix("token ") } && grid.contains { $0.hasPrefix("layer 1 ") }, outcome.stdout)
        for line in grid { XCTAssertLessThanOrEqual(line.count, 80, String(line)) }
        let reader = try readSVG(svg)
        XCTAssertEqual(reader.root, "svg")
        // A cell per token and layer (9 × 2) plus a legend swatch per expert (8).
        XCTAssertEqual(reader.counts["rect", default: 0], 9 * 2 + 8 + 1, "\(reader.counts)")
    }

    /// Two small domains in a temporary folder.
    func domainsFolder() throws -> URL {
        let folder = try temporaryDirectory("domains")
        try Data("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune.\n"
                 .utf8).write(to: folder.appendingPathComponent("verse.txt"))
        try Data("let x = [1, 2, 3].map { $0 * 2 }\nfor i in 0..<10 { print(i) }\nfunc f(_ a: Int) -> Int { a + 1 }\n"
                 .utf8).write(to: folder.appendingPathComponent("code.txt"))
        return folder
    }

    func testSpecializeMutualInformationIsInRange() throws {
        let folder = try domainsFolder()
        for name in ["olmoe", "granitemoe"] {
            let directory = Self.fixtures.appendingPathComponent(name)
            let outcome = try run(["specialize", "--model", directory.path, "--domains", folder.path,
                                   "--permutations", "50", "--min-count", "2"])
            XCTAssertEqual(outcome.status, 0, outcome.summary)
            for piece in ["Domain × expert, MoE layer 0", "Domain × expert, MoE layer 1", "I(domain; expert) = ",
                          "Band × expert, MoE layer 1", "I(domain; expert | token) = ", "Most characteristic tokens",
                          "domains text itself", "For scale"] {
                XCTAssertTrue(outcome.stdout.contains(piece), "\(name): stdout lacks '\(piece)':\n\(outcome.stdout)")
            }
        }
        // The same run in process: MI within its bounds.
        let directory = Self.fixtures.appendingPathComponent("olmoe")
        let model = try PretrainedModel(directory: directory)
        let tokenizer = try HubTokenizer.load(directory: directory)
        let domains = try DomainFolder.load(folder.path, encode: { tokenizer.encode($0) })
        let all = domains.flatMap(\.ids)
        let bands = FrequencyBands(trainingTokens: all, vocabularySize: model.config.vocabularySize, bands: 3)
        let run = SpecializationRun(model: model, domains: domains, bands: bands, permutations: 50, minimumCount: 2,
                                    groupSeenTypesOnly: true)
        XCTAssertEqual(run.layers.count, 2)
        XCTAssertEqual(run.ids, all)
        let bound = log2(Double(min(domains.count, model.config.expertCount)))
        for l in run.byDomain {
            XCTAssertGreaterThanOrEqual(l.test.observedBits, 0)
            XCTAssertLessThanOrEqual(l.test.observedBits, bound + 1e-9)
            XCTAssertEqual(l.table.total, all.count)
            XCTAssertTrue(l.test.pValue > 0 && l.test.pValue <= 1)
        }
        // The random groupings are drawn over the seen types only: 200 draws at most, p in (0, 1].
        XCTAssertEqual(run.randomGrouping.count, 2)
        for (g, band) in zip(run.randomGrouping, run.byBand) {
            XCTAssertEqual(g.permutations, 50)
            XCTAssertEqual(g.observedBits, band.test.observedBits, accuracy: 1e-9)
            XCTAssertTrue(g.pValue > 0 && g.pValue <= 1)
        }
        // The routing of the stream is the routing of each domain as one sequence (both fit the context).
        let first = model.routeTokens(domains[0].ids)
        XCTAssertEqual(run.layers[0].experts.prefix(domains[0].ids.count).map { $0 }, first[0].experts)
    }

    func testBadInput() throws {
        let model = Self.fixtures.appendingPathComponent("olmoe").path
        // An empty domains folder.
        let empty = try temporaryDirectory("empty")
        var outcome = try run(["specialize", "--model", model, "--domains", empty.path])
        XCTAssertEqual(outcome.status, 1, outcome.summary)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.summary)
        XCTAssertTrue(outcome.stderr.contains("no domain files"), outcome.stderr)
        // A file that is not UTF-8.
        let folder = try domainsFolder()
        try Data([0x66, 0xFF, 0xFE, 0x80]).write(to: folder.appendingPathComponent("binary.txt"))
        outcome = try run(["specialize", "--model", model, "--domains", folder.path])
        XCTAssertEqual(outcome.status, 1, outcome.summary)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.summary)
        XCTAssertTrue(outcome.stderr.contains("binary.txt: not valid UTF-8"), outcome.stderr)
        // A prompt longer than the context (256 positions).
        outcome = try run(["route", "--model", model, "--prompt", String(repeating: "to be or not ", count: 200)])
        XCTAssertEqual(outcome.status, 1, outcome.summary)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.summary)
        XCTAssertTrue(outcome.stderr.contains("more than the context of 256"), outcome.stderr)
        // Usage: a missing --prompt or --domains.
        outcome = try run(["route", "--model", model])
        XCTAssertEqual(outcome.status, 2, outcome.summary)
        XCTAssertTrue(outcome.stderr.contains("--prompt"), outcome.stderr)
        outcome = try run(["specialize", "--model", model])
        XCTAssertEqual(outcome.status, 2, outcome.summary)
        XCTAssertTrue(outcome.stderr.contains("--domains"), outcome.stderr)
    }

    /// Every flag the parser takes is in --help.
    func testHelpListsEveryFlag() throws {
        let source = try String(contentsOf: Self.repositoryRoot.appendingPathComponent("Sources/pretrained-moe/main.swift"),
                                encoding: .utf8)
        let outcome = try run(["--help"])
        XCTAssertEqual(outcome.status, 0)
        for line in source.split(separator: "\n") where line.trimmingCharacters(in: .whitespaces).hasPrefix("case \"--") {
            let flag = String(line.split(separator: "\"")[1])
            XCTAssertTrue(outcome.stdout.contains(flag), "--help lacks \(flag)")
        }
    }
}
