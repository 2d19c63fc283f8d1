// Tests for the `gpt-moe` command, run as a user runs it: the built executable
// in a subprocess, its exit status, standard output and standard error. The
// contract is mnist-moe's (CommandLineTests.swift):
//   * status 0: it worked; tables on stdout, files in --out.
//   * status 2: the command line is wrong. One line "gpt-moe: …" naming the
//     flag and where the usage is, on stderr; nothing on stdout, nothing done.
//   * status 1: the command line is fine but a file is not. One line
//     "gpt-moe: FILE: problem" on stderr.
// Every run here is tiny (a synthetic corpus, a model of width 16, a few
// steps): seconds, not minutes.
import Foundation
import XCTest
@testable import MoE

final class GPTCommandLineTests: CommandLineTestCase {
    override class var program: String { "gpt-moe" }

    /// A model and a run small enough for a test: seconds for all five presets.
    private let tiny = ["--synthetic", "--synthetic-chars", "6000", "--layers", "2", "--width", "16", "--heads", "2",
                        "--context", "16", "--batch-size", "4", "--experts", "4", "--steps", "6", "--eval-interval", "3",
                        "--eval-windows", "8", "--length", "20", "--threads", "1"]

    // MARK: --help

    func testHelpListsEveryFlagAndPreset() throws {
        let outcome = try run(["--help"])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertEqual(outcome.stderr, "")
        XCTAssertTrue(outcome.stdout.hasPrefix("usage: gpt-moe [train] [options]"), outcome.stdout)
        // Every `case "--flag":` of Options.swift and of the shared routing flags
        // must be in the help text, as a word of its own.
        let flags = try flagsInParser()
        XCTAssertGreaterThan(flags.count, 30)
        let words = Set(outcome.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," }).map(String.init))
        for flag in flags { XCTAssertTrue(words.contains(flag), "--help does not list \(flag)") }
        for preset in ["dense", "baseline", "top2", "strong_reg", "throughput_opt"] {
            XCTAssertTrue(words.contains(preset), "--help does not explain the preset \(preset)")
        }
        XCTAssertEqual(try run(["compare", "-h"]).stdout, outcome.stdout)
    }

    // MARK: Usage errors (status 2)

    func testBadCommandLinesExitTwoWithOneLineNamingTheFlagAndWhereTheUsageIs() throws {
        let cases: [(arguments: [String], flag: String, says: String)] = [
            (["--bogus"], "--bogus", "unknown option"),
            (["--step", "5"], "--step", "did you mean --steps?"),
            (["--epoch", "5"], "--epoch", "did you mean --epochs?"),
            (["--router", "expert-choice"], "--router expert-choice", "cannot train a decoder"),
            (["--capacity", "1.25", "--overflow", "score"], "--overflow score", "cannot train a decoder"),
            (["--steps"], "--steps", "needs a value"),
            (["--steps", "0"], "--steps", "'0'"),
            (["--lr", "abc"], "--lr", "'abc'"),
            (["--preset", "huge"], "--preset", "'huge'"),
            (["--tokenizer", "words"], "--tokenizer", "'words'"),
            (["--heads", "3"], "--heads", "--width 64"),
            (["--top-k", "9"], "--top-k", "--experts 8"),
            (["--moe-layers", "1,x"], "--moe-layers", "'1,x'"),
            (["--moe-layers", "7"], "--moe-layers", "--layers 4"),
            (["--vocab", "100"], "--vocab", "'100'"),
            (["--synthetic", "--text", "a.txt"], "--synthetic", "--text"),
            (["compare", "--preset", "dense"], "--preset", "compare runs every preset"),
            (["--steps", "5", "compare"], "compare", "must come first"),
            (["--timing-rounds", "5"], "--timing-rounds", "is for compare"),
            (["--router", "magic"], "--router", "'magic'"),
            (["--balance", "switch,l2"], "--balance", "'l2'"),
            (["--router", "deepseek", "--groups", "3"], "--groups", "must divide"),
            (["--temperature-schedule", "step"], "--temperature-schedule", "'step'"),
        ]
        for (arguments, flag, says) in cases {
            let outcome = try run(arguments)
            let what = "gpt-moe \(arguments.joined(separator: " "))"
            XCTAssertEqual(outcome.status, 2, "\(what)\n\(outcome.summary)")
            XCTAssertEqual(outcome.reason, .exit, what)
            XCTAssertEqual(outcome.stdout, "", "\(what): printed to stdout")
            guard let first = outcome.errorLines.first else { XCTFail("\(what): nothing on stderr"); continue }
            XCTAssertTrue(first.hasPrefix("gpt-moe: "), "\(what): \(first)")
            XCTAssertTrue(first.contains(flag), "\(what): the error does not name \(flag): \(first)")
            XCTAssertTrue(first.contains(says), "\(what): expected '\(says)' in: \(first)")
            XCTAssertTrue(first.hasSuffix("(gpt-moe --help lists every option)"), "\(what): \(first)")
            XCTAssertEqual(outcome.errorLines.count, 1, "\(what): one line, not the usage:\n\(outcome.stderr)")
        }
    }

    /// A router from Sources/Exercises trains the GPT and is recorded as it
    /// is (k = 1); `sample` without --checkpoint then reads what train wrote;
    /// every progress line fits 80 columns.
    func testAnExerciseRouterTrainsTheGPTAndSampleFindsItsCheckpoint() throws {
        let out = try temporaryDirectory("exercise-router")
        let trained = try run(tiny + ["--preset", "top2", "--router", "exercise1", "--out", out.path])
        XCTAssertEqual(trained.status, 0, trained.summary)
        guard trained.status == 0 else { return }
        for line in trained.stdout.split(separator: "\n") where line.hasPrefix("  step") {
            XCTAssertLessThan(line.count, 80, "a progress line wider than 80 columns: \(line)")
        }
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let model = try XCTUnwrap((summary["models"] as? [[String: Any]])?.first)
        let routing = try XCTUnwrap(model["routing"] as? [String: Any])
        XCTAssertEqual(routing["router"] as? String, "exercise1")
        XCTAssertEqual(routing["k"] as? Int, 1, "top2's k = 2 gave way to the router's own top-1")
        let sample = try run(["sample", "--out", out.path, "--preset", "top2", "--prompt", "the ", "--length", "10"])
        XCTAssertEqual(sample.status, 0, sample.summary)
        XCTAssertTrue(sample.stdout.hasPrefix("the "), sample.stdout)
    }

    // MARK: File errors (status 1)

    func testMissingFilesExitOneWithOneLineNamingTheFile() throws {
        let folder = try temporaryDirectory("missing")
        let text = folder.appendingPathComponent("nope.txt").path
        let checkpoint = folder.appendingPathComponent("nope.safetensors").path
        // `sample` without --checkpoint reads what `train` writes: --out/--preset.safetensors.
        let trained = folder.appendingPathComponent("top2.safetensors").path
        for (arguments, file) in [(["--text", text, "--out", folder.path], text),
                                  (["sample", "--checkpoint", checkpoint], checkpoint),
                                  (["sample", "--out", folder.path, "--preset", "top2"], trained)] {
            let outcome = try run(arguments)
            XCTAssertEqual(outcome.status, 1, outcome.summary)
            XCTAssertEqual(outcome.reason, .exit)
            XCTAssertEqual(outcome.errorLines.count, 1, outcome.stderr)
            let message = outcome.errorLines.first ?? ""
            XCTAssertTrue(message.hasPrefix("gpt-moe: \(file)"), message)
        }
    }

    // MARK: Real runs

    /// `compare` on a tiny synthetic setup: the tables, summary.json with the five
    /// models, the plots, loadable checkpoints; then `sample` from one of them.
    func testCompareWritesEverythingAndSampleContinuesAPrompt() throws {
        let out = try temporaryDirectory("compare")
        let outcome = try run(["compare"] + tiny + ["--out", out.path])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        guard outcome.status == 0 else { return }
        for title in ["Results", "Time per step", "Expert usage and router entropy", "Step ×dense", "Backward ×dense"] {
            XCTAssertTrue(outcome.stdout.contains(title), "no '\(title)' in the output\n\(outcome.stdout)")
        }

        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let models = try XCTUnwrap(summary["models"] as? [[String: Any]])
        XCTAssertEqual(models.map { $0["name"] as? String }, ["dense", "baseline", "top2", "strong_reg", "throughput_opt"])
        for model in models {
            let name = model["name"] as? String ?? "?"
            // throughput_opt: 2× the windows per step, half the steps, evaluation every 3/2 → 1 step.
            let bigSteps = name == "throughput_opt"
            XCTAssertEqual(model["steps"] as? Int, bigSteps ? 3 : 6, name)
            XCTAssertEqual((model["evaluations"] as? [[String: Any]])?.map { $0["step"] as? Int },
                           bigSteps ? [0, 1, 2, 3] : [0, 3, 6], name)
            // Step 0 trained and timed nothing: its fields say so with null, not with zeros.
            let first = (model["evaluations"] as? [[String: Any]])?.first ?? [:]
            for key in ["train_loss", "aux_loss_weighted", "forward_seconds", "backward_seconds", "optimizer_seconds"] {
                XCTAssertTrue(first[key] is NSNull, "\(name): step 0's \(key) is \(first[key] ?? "missing")")
            }
            XCTAssertNotNil(model["best_val_loss"] as? Double, name)
            XCTAssertGreaterThan(model["train_seconds"] as? Double ?? 0, 0, name)
            XCTAssertEqual(model["batch_size"] as? Int, name == "throughput_opt" ? 8 : 4, name)
            let routing = model["validation_routing"] as? [[String: Any]]
            if name == "dense" {
                XCTAssertNil(routing, "the dense model has no routing")
                XCTAssertEqual(model["params_total"] as? Int, model["params_active"] as? Int)
            } else {
                XCTAssertEqual(routing?.map { $0["block"] as? Int }, [1], "every other block of 2: block 1")
                let usage = try XCTUnwrap(routing?.first?["usage"] as? [Double])
                XCTAssertEqual(usage.count, 4)
                XCTAssertEqual(usage.reduce(0, +), 1, accuracy: 1e-9)
            }
        }
        XCTAssertEqual(models[1]["params_total"] as? Int, models[4]["params_total"] as? Int, "throughput_opt is baseline's model")
        XCTAssertEqual(models[1]["top_k"] as? Int, 1)
        XCTAssertEqual(models[2]["top_k"] as? Int, 2)
        XCTAssertEqual(models[3]["aux_weight"] as? Double, 0.1)

        let curves = try readSVG(out.appendingPathComponent("loss_curves.svg"))
        XCTAssertTrue(curves.text.contains("baseline val") && curves.text.contains("dense train"), curves.text)
        _ = try readSVG(out.appendingPathComponent("expert_usage.svg"))
        _ = try readSVG(out.appendingPathComponent("router_entropy.svg"))

        let checkpoint = out.appendingPathComponent("baseline.safetensors")
        let (model, tokenizer, metadata) = try GPTCheckpoint.load(from: checkpoint)
        XCTAssertEqual(model.config.moeLayers, [1])
        XCTAssertEqual(metadata["preset"], "baseline")
        XCTAssertEqual(tokenizer.kind, "char")
        let saved = try String(contentsOf: out.appendingPathComponent("baseline.tokenizer.json"), encoding: .utf8)
        XCTAssertEqual(saved, tokenizer.serialized(), "the tokenizer beside the checkpoint is the one inside it")

        let sample = try run(["sample", "--checkpoint", checkpoint.path, "--prompt", "the ", "--length", "30", "--seed", "4"])
        XCTAssertEqual(sample.status, 0, sample.summary)
        XCTAssertTrue(sample.stdout.hasPrefix("the "), sample.stdout)
        XCTAssertEqual(sample.stdout.count, "the ".count + 30 + 1, "prompt, 30 characters, newline")
        let again = try run(["sample", "--checkpoint", checkpoint.path, "--prompt", "the ", "--length", "30", "--seed", "4"])
        XCTAssertEqual(again.stdout, sample.stdout, "seeded")
        // --sample-temperature 0 always takes the likeliest token: the seed no longer matters.
        let greedy = try run(["sample", "--checkpoint", checkpoint.path, "--prompt", "the ", "--length", "30",
                              "--sample-temperature", "0", "--seed", "4"])
        let greedyOtherSeed = try run(["sample", "--checkpoint", checkpoint.path, "--prompt", "the ", "--length", "30",
                                       "--sample-temperature", "0", "--seed", "5"])
        XCTAssertEqual(greedy.status, 0, greedy.summary)
        XCTAssertEqual(greedy.stdout, greedyOtherSeed.stdout, "temperature 0 is argmax")
    }

    /// Routing flags reach the MoE layers: a DeepSeek-V3 router with the
    /// auxiliary-loss-free bias and the z-loss, and an annealed temperature,
    /// recorded in summary.json and in the checkpoint.
    func testRoutingFlagsReachTheModel() throws {
        let out = try temporaryDirectory("routing")
        let outcome = try run(["--router", "deepseek", "--top-k", "2", "--groups", "2", "--top-groups", "1",
                               "--balance", "bias,z", "--temperature", "2", "--temperature-end", "1"]
                              + tiny + ["--out", out.path])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertTrue(outcome.stdout.contains("deepseek k=2"), outcome.stdout)
        let (model, _, _) = try GPTCheckpoint.load(from: out.appendingPathComponent("baseline.safetensors"))
        XCTAssertEqual(model.config.routing.router, "deepseek")
        XCTAssertEqual(model.config.routing.balancing, ["bias", "z"])
        XCTAssertEqual(model.config.routing.temperature, TemperatureSchedule(start: 2, end: 1, shape: .linear))
        XCTAssertEqual(model.namedBuffers.map(\.name), ["blocks.1.moe.balancing.0.bias"])
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        let models = try XCTUnwrap(summary["models"] as? [[String: Any]])
        XCTAssertEqual((models.first?["routing"] as? [String: Any])?["router"] as? String, "deepseek")
        XCTAssertEqual((summary["config"] as? [String: Any])?["routing_flags"] as? [String],
                       ["--router", "deepseek", "--top-k", "2", "--groups", "2", "--top-groups", "1", "--balance", "bias,z",
                        "--temperature", "2.0→1.0 linear"])
    }

    /// `train` with the BPE tokenizer: the tokenizer is trained, saved and used, and a sample is printed.
    func testTrainWithBPE() throws {
        let out = try temporaryDirectory("bpe")
        let outcome = try run(["--preset", "top2", "--tokenizer", "bpe", "--vocab", "300"] + tiny + ["--out", out.path])
        XCTAssertEqual(outcome.status, 0, outcome.summary)
        XCTAssertTrue(outcome.stdout.contains("Tokenizer: bpe, 300 tokens"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("Sample from the best checkpoint"), outcome.stdout)
        let (_, tokenizer, _) = try GPTCheckpoint.load(from: out.appendingPathComponent("top2.safetensors"))
        XCTAssertEqual(tokenizer.kind, "bpe")
        XCTAssertEqual(tokenizer.vocabularySize, 300)
        let summary = try readJSON(out.appendingPathComponent("summary.json"))
        XCTAssertNotNil(summary["sample"] as? String)
        XCTAssertEqual((summary["config"] as? [String: Any])?["preset"] as? String, "top2")
    }
}
