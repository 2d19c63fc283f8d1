// The figures the README and Part 3 quote from the default run, checked against
// that run's committed summary. A number copied by hand into prose goes stale
// the day the code changes and the run is redone; these tests make the stale
// copy fail instead of sitting there.
//
// The run is `swift run -c release mnist-moe` with every default (seed 0), and
// its summary.json is committed at Notebooks/runs/mnist-moe/summary.json
// (README.md beside it says when and where it ran). Each quotation below is a
// markdown file and a template of the text as it appears there, in which
// `{path:format}` stands for a number of the summary:
//
//   path    dot-separated keys into the JSON. In an array of objects a key picks
//           the element whose "name" (models: moe, dense) or "epoch" (1...30)
//           equals it; in an array of numbers it is an index from 0. So
//           `models.moe.epochs.5.train_accuracy` is the MoE's epoch-5 training
//           accuracy and `models.moe.specialization.3.6` digit 3's share on
//           expert 6. `a*b` and `a/b` multiply or divide two paths.
//   format  pct2 (0.94017 → "94.02%"), pct2bare ("94.02"), f2, f3, f4
//           (fixed decimals), int (732946 → "732,946").
//
// Everything else in a template is literal: the walkthrough's own numbers, the
// expert labels, the words around the figure. Runs of spaces and line breaks
// count as one space on both sides, so re-wrapping a paragraph or re-aligning a
// table column does not break a quotation. The tests read only committed
// files: no MNIST, no training.
//
// After a re-run (a change to the model, the training or a default):
//   1. run the command above again and copy its summary.json over the committed
//      one (and update the README.md beside it if the machine changed);
//   2. run `swift test --filter QuotedFiguresTests`: each failure is one line
//      naming the file, the quotation, the text it expected and the summary's
//      values, so fix that text in the markdown file (not the template) to the
//      expected one, and re-read the prose around it, whose reading may no
//      longer hold.
// Figures from other runs (the five seeds, the ablation, α = 0, the GPT) are
// not here: their summaries are not committed.
import Foundation
import XCTest
import MoE

final class QuotedFiguresTests: XCTestCase {
    // MARK: - The committed run

    static let summaryPath = "Notebooks/runs/mnist-moe/summary.json"

    static func summary() throws -> [String: Any] {
        let data = try Data(contentsOf: TestData.root.appendingPathComponent(summaryPath))
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw QuotationError("\(summaryPath) is not a JSON object")
        }
        return object
    }

    // MARK: - The quotations

    /// Shorthands for the two models' keys in the templates below.
    static let moe = "models.moe", dense = "models.dense"

    /// A row of the learning-curve table that both files print: epoch, the
    /// MoE's and the dense model's training and test accuracy, then the
    /// walkthrough's two figures (literal).
    static func curveRow(_ epoch: Int, _ walkthrough: String) -> String {
        let e = "epochs.\(epoch)"
        return "\(epoch) {\(moe).\(e).train_accuracy:pct2} {\(moe).\(e).test_accuracy:pct2} "
            + "{\(dense).\(e).train_accuracy:pct2} {\(dense).\(e).test_accuracy:pct2} \(walkthrough)"
    }

    /// A row of the expert-usage table: expert, share of routed slots, mean router probability.
    static func usageRow(_ expert: Int) -> String {
        "\(expert) {\(moe).expert_usage.\(expert):pct2} {\(moe).mean_router_probability.\(expert):f3}"
    }

    /// A row of the specialization table: digit, primary and secondary expert (labels literal).
    static func specializationRow(_ digit: Int, _ primary: Int, _ secondary: Int) -> String {
        let s = "\(moe).specialization.\(digit)"
        return "\(digit) Expert \(primary) ({\(s).\(primary):pct2}) Expert \(secondary) ({\(s).\(secondary):pct2})"
    }

    /// The tables mnist-moe prints and both files show: setup, accuracy, curve, usage.
    static let printedTables: [String] = [
        "Total parameters {\(moe).params_total:int} {\(dense).params_total:int}",
        "Active parameters {\(moe).params_active:int} {\(dense).params_active:int}",
        "Final training accuracy {\(moe).final_train_accuracy:pct2} {\(dense).final_train_accuracy:pct2} 99.86% 100.00%",
        "Test accuracy {\(moe).test_accuracy:pct2} {\(dense).test_accuracy:pct2} 95.14% 95.36%",
        "Final training loss {\(moe).final_loss:f4} {\(dense).final_loss:f4} 0.2147 0.0001",
        "classification (CE) {\(moe).final_classification_loss:f4} {\(dense).final_classification_loss:f4} 0.004 -",
        "α·aux {\(moe).final_aux_loss*config.aux_weight:f4} {\(dense).final_aux_loss*config.aux_weight:f4} 0.21 -",
        "Aux loss (unweighted) {\(moe).final_aux_loss:f3} - 2.10 -",
        curveRow(1, "63.98% 75.68%"), curveRow(5, "95.66% 96.84%"),
        curveRow(15, "99.60% 99.80%"), curveRow(30, "99.86% 100.00%"),
    ] + (0..<8).map(usageRow) + [
        "Router entropy {\(moe).router_entropy:f3} nats per token (max ln 8 = 2.079; normalised 0.73); "
            + "load entropy {\(moe).load_entropy:f3}; load CV {\(moe).load_cv:f3}",
        "Load-balancing loss (switch) {\(moe).final_aux_loss:f3} in the last epoch (perfect balance 2, total collapse 8)",
    ]

    /// (file, template): every figure the two files quote from the default run.
    static let quotations: [(file: String, template: String)] = {
        var q: [(String, String)] = []
        func add(_ file: String, _ templates: [String]) { q += templates.map { (file, $0) } }

        // README.md, "mnist-moe" at the top: the epoch lines (their times are not checked) and the tables.
        add("README.md", [
            "ce {\(moe).epochs.1.train_loss:f4} aux {\(moe).epochs.1.aux_loss:f3} train {\(moe).epochs.1.train_accuracy:pct2} test {\(moe).epochs.1.test_accuracy:pct2}",
            "ce {\(moe).epochs.2.train_loss:f4} aux {\(moe).epochs.2.aux_loss:f3} train {\(moe).epochs.2.train_accuracy:pct2} test {\(moe).epochs.2.test_accuracy:pct2}",
            "ce {\(moe).epochs.30.train_loss:f4} aux {\(moe).epochs.30.aux_loss:f3} train {\(moe).epochs.30.train_accuracy:pct2} test {\(moe).epochs.30.test_accuracy:pct2}",
            "ce {\(dense).epochs.1.train_loss:f4} train {\(dense).epochs.1.train_accuracy:pct2} test {\(dense).epochs.1.test_accuracy:pct2}",
            "ce {\(dense).epochs.30.train_loss:f4} train {\(dense).epochs.30.train_accuracy:pct2} test {\(dense).epochs.30.test_accuracy:pct2}",
        ] + printedTables + [
            "Part 3's closely ({\(moe).final_train_accuracy:pct2} at the end, as there; "
                + "{\(moe).epochs.5.train_accuracy:pct2} against 95.66% at epoch 5)",
            // The ablation paragraph compares with the default, which is this run.
            "CV 0.080 against the default's {\(moe).load_cv:f3}",
            "against the default's {\(moe).test_accuracy:pct2}",
        ])

        // Notebooks/part3-mnist.md
        let part3 = "Notebooks/part3-mnist.md"
        // §1
        add(part3, ["| parameters | {\(moe).params_total:int} ({\(moe).params_active:int} active per image) | {\(dense).params_total:int} |"])
        // §2: the printed tables, the parameter-efficiency table, the per-epoch table and the prose.
        add(part3, printedTables + [
            "MoE total parameters {\(moe).params_total:int}",
            "MoE active parameters per input {\(moe).params_active:int}",
            "Dense baseline parameters {\(dense).params_total:int}",
            "MoE capacity multiplier {\(moe).params_total/\(dense).params_total:f2}×",
            "{\(moe).final_loss:f4} against 0.2147, of which the cross-entropy is {\(moe).final_classification_loss:f4} "
                + "against the series' 0.004 and the rest is $\\alpha \\cdot L_\\text{balance}$ = 0.1 × {\(moe).final_aux_loss:f3}",
        ])
        let series: [Int: (moe: String, dense: String)] = [1: ("63.98%", "75.68%"), 5: ("95.66%", "96.84%"),
                                                           15: ("99.60%", "99.80%"), 30: ("99.86%", "100.00%")]
        for epoch in [1, 2, 3, 5, 10, 15, 20, 25, 30] {
            let e = "epochs.\(epoch)", s = series[epoch]
            add(part3, ["| \(epoch) | {\(moe).\(e).train_accuracy:pct2} | \(s?.moe ?? "") | {\(dense).\(e).train_accuracy:pct2} | \(s?.dense ?? "") "
                        + "| {\(moe).\(e).test_accuracy:pct2} | {\(dense).\(e).test_accuracy:pct2} | {\(moe).\(e).train_loss:f4} | {\(moe).\(e).aux_loss:f3} |"])
        }
        add(part3, [
            "({\(moe).epochs.5.train_accuracy:pct2bare} / 95.66, {\(moe).epochs.15.train_accuracy:pct2bare} / 99.60, "
                + "{\(moe).epochs.30.train_accuracy:pct2bare} / 99.86)",
            "({\(dense).epochs.5.train_accuracy:pct2bare} / 96.84, {\(dense).epochs.15.train_accuracy:pct2bare} / 99.80,",
            "{\(moe).epochs.1.train_accuracy:pct2} against 63.98% and {\(dense).epochs.1.train_accuracy:pct2} against 75.68%",
            "({\(moe).epochs.1.train_accuracy:pct2} against {\(dense).epochs.1.train_accuracy:pct2} in epoch 1)",
            "The test accuracy is another matter: {\(moe).test_accuracy:pct2} and {\(dense).test_accuracy:pct2} against the series'",
        ])
        // §3: the specialization table and its reading, the usage table and its reading.
        add(part3, [(0, 5, 7), (1, 3, 6), (2, 7, 6), (3, 6, 2), (4, 1, 0),
                    (5, 4, 5), (6, 7, 5), (7, 6, 1), (8, 3, 5), (9, 1, 0)].map(specializationRow))
        let s = "\(moe).specialization"
        add(part3, [
            "(experts 6, 2 and 4: {\(s).3.6:pct2bare} + {\(s).3.2:pct2bare} + {\(s).3.4:pct2bare} = 94.65%)",
            "(7: {\(s).2.7:pct2}, 6: {\(s).2.6:pct2}, 3: {\(s).2.3:pct2}, 0: {\(s).2.0:pct2}, 4: {\(s).2.4:pct2})",
            "(4: {\(s).4.1:pct2} and {\(s).4.0:pct2}; 9: {\(s).9.1:pct2} and {\(s).9.0:pct2})",
            "Expert 1 also takes {\(s).7.1:pct2} of the 7s",
            "{\(s).0.5:pct2} of the 0s (nearly every 0 uses it), {\(s).5.5:pct2} of the 5s, "
                + "{\(s).6.5:pct2} of the 6s and {\(s).8.5:pct2} of the 8s",
            "({\(moe).expert_usage.2:pct2} to {\(moe).expert_usage.5:pct2} against 12.5%; coefficient of variation {\(moe).load_cv:f3})",
            "The router's entropy, {\(moe).router_entropy:f3} nats per image",
        ])
        // §4 and §5: this run beside the others.
        add(part3, [
            "above the balanced model's {\(moe).test_accuracy:pct2} at the same seed",
            "({\(moe).test_accuracy:pct2} against {\(dense).test_accuracy:pct2}, §2)",
            // Seed 0's late excursion (the same run: --seeds 0-4 reproduces seed 0 exactly).
            "goes from {\(moe).epochs.18.train_accuracy:pct2} at epoch 18 (cross-entropy {\(moe).epochs.18.train_loss:f4}) "
                + "to {\(moe).epochs.19.train_accuracy:pct2} and then {\(moe).epochs.20.train_accuracy:pct2} at epoch 20 "
                + "({\(moe).epochs.20.train_loss:f4}), and is back at {\(moe).epochs.22.train_accuracy:pct2} at epoch 22 "
                + "({\(moe).epochs.22.train_loss:f4}); its test accuracy meanwhile goes "
                + "{\(moe).epochs.18.test_accuracy:pct2bare} → {\(moe).epochs.19.test_accuracy:pct2bare} → "
                + "{\(moe).epochs.20.test_accuracy:pct2bare} → {\(moe).epochs.21.test_accuracy:pct2bare} → "
                + "{\(moe).epochs.22.test_accuracy:pct2}",
            "({\(moe).epochs.18.aux_loss:f3} at epoch 18, {\(moe).epochs.20.aux_loss:f3} at epoch 20",
            "| 0 | {\(moe).final_train_accuracy:pct2} |",
            "against the epoch's running {\(moe).final_classification_loss:f4}",
            "({\(moe).router_entropy:f2} nats, §3)",
            "As the series explains, {\(moe).final_aux_loss*config.aux_weight:f4} of the MoE's final {\(moe).final_loss:f4} (§2)",
        ])
        // §6: the prose compares the ablation's rows with the default, which is this run.
        add(part3, [
            "(the default: {\(moe).test_accuracy:pct2})",
            "(1.853 nats per image against {\(moe).router_entropy:f3})",
            "(CV 0.080 against {\(moe).load_cv:f3}; the idlest expert at 10.79% against {\(moe).expert_usage.2:pct2})",
            "(CV 0.092 against {\(moe).load_cv:f3})",
            "within a point of its {\(moe).test_accuracy:pct2}",
        ])
        // Notebooks/part6-specialization.md, §6: the same default run's specialization and MI.
        let part6 = "Notebooks/part6-specialization.md"
        let mi = "\(moe).digit_expert_mutual_information"
        add(part6, [(0, 5, 7), (1, 3, 6), (2, 7, 6), (3, 6, 2), (4, 1, 0),
                    (5, 4, 5), (6, 7, 5), (7, 6, 1), (8, 3, 5), (9, 1, 0)].map(specializationRow) + [
            "I(digit; top-1 expert) = {\(mi).mi_bits:f4} bits (chance {\(mi).chance_mi_bits:f4} ± {\(mi).chance_mi_std_bits:f4}, "
                + "p = 0.000999, 1000 shuffles)",
            "{\(mi).mi_bits:f2} bits against a chance level of {\(mi).chance_mi_bits:f3} bits",
            "the largest was {\(mi).chance_mi_max_bits:f4}",
            "({\(mi).mi_bits:f2} of 3.32 bits)",
            "The {\(mi).mi_bits:f2} bits measured",
        ])
        add("README.md", ["model (I(digit; top-1 expert) = {\(mi).mi_bits:f2} bits, chance {\(mi).chance_mi_bits:f3},"])
        return q
    }()

    // MARK: - The tests

    /// Every quotation, rendered from the summary, appears in its file.
    func testQuotedFiguresMatchTheCommittedRun() throws {
        let summary = try Self.summary()
        var texts: [String: String] = [:]
        var failures: [String] = []
        for (file, template) in Self.quotations {
            if texts[file] == nil {
                let text = try String(contentsOf: TestData.root.appendingPathComponent(file), encoding: .utf8)
                texts[file] = Self.collapsingWhitespace(text)
            }
            do {
                let (expected, values) = try Self.render(template, from: summary)
                if !texts[file]!.contains(Self.collapsingWhitespace(expected)) {
                    failures.append("\(file): quotation \"\(template)\" should read \"\(expected)\" "
                                    + "(\(Self.summaryPath): \(values.joined(separator: ", "))), and the file does not contain it")
                }
            } catch {
                failures.append("\(file): quotation \"\(template)\": \(error)")
            }
        }
        for failure in failures { XCTFail(failure) }
        note("checked \(Self.quotations.count) quotations in \(Set(Self.quotations.map(\.file)).sorted()) against \(Self.summaryPath)")
    }

    /// The committed run is the default one: the walkthrough's setup (Part 3,
    /// §1; Sources/mnist-moe/Options.swift) and the library's default routing.
    /// A summary from a run with other flags, or from a run after the defaults
    /// changed, fails here, since the text quotes it as the default run.
    func testCommittedRunIsTheDefaultRun() throws {
        let config = try XCTUnwrap(try Self.summary()["config"] as? [String: Any], "\(Self.summaryPath) has no \"config\"")
        let walkthrough: [String: Any] = [
            "train_size": 5000, "test_size": 10_000, "epochs": 30, "batch_size": 64, "lr": 0.001, "aux_weight": 0.1,
            "experts": 8, "top_k": 2, "hidden": 256, "expert_hidden": 128, "model": "both", "seed": 0, "seeds": [0],
            "shuffle": true, "optimizer": "adam", "variant": "walkthrough", "normalize": "none", "subset": "first",
            "routing": RoutingSetup().json,
        ]
        // "threads" is left out: the results do not depend on it (the tests check that).
        for key in walkthrough.keys.sorted() {
            let expected = try Self.canonical(walkthrough[key]!)
            let found = try config[key].map { try Self.canonical($0) } ?? "missing"
            XCTAssertEqual(found, expected, "\(Self.summaryPath): config.\(key) is \(found), the default is \(expected)")
        }
    }

    // MARK: - Rendering

    struct QuotationError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Runs of whitespace (spaces, line breaks) as one space.
    static func collapsingWhitespace(_ text: String) -> String {
        text.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ")
    }

    /// A JSON value as sorted-key JSON text, so that two values compare as text.
    static func canonical(_ value: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys, .fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    /// The template with every `{path:format}` replaced, and each path's value (for the failure message).
    static func render(_ template: String, from summary: [String: Any]) throws -> (String, [String]) {
        let pattern = try NSRegularExpression(pattern: #"\{([A-Za-z0-9_.*/]+):([a-z0-9]+)\}"#)
        var out = "", values: [String] = []
        var copied = template.startIndex   // the template up to here is in `out`
        for m in pattern.matches(in: template, range: NSRange(template.startIndex..., in: template)) {
            let whole = Range(m.range, in: template)!
            let path = String(template[Range(m.range(at: 1), in: template)!])
            let format = String(template[Range(m.range(at: 2), in: template)!])
            let value = try evaluate(path, in: summary)
            values.append("\(path) = \(value)")
            out += String(template[copied..<whole.lowerBound]) + (try formatted(value, format))
            copied = whole.upperBound
        }
        return (out + String(template[copied...]), values)
    }

    /// A path, or two paths joined by `*` or `/`.
    static func evaluate(_ expression: String, in summary: [String: Any]) throws -> Double {
        for (symbol, op) in [("*", { (a: Double, b: Double) in a * b }), ("/", { (a: Double, b: Double) in a / b })] {
            let parts = expression.components(separatedBy: symbol)
            if parts.count == 2 { return op(try number(at: parts[0], in: summary), try number(at: parts[1], in: summary)) }
        }
        return try number(at: expression, in: summary)
    }

    /// The number at a dot-separated path (see the top of the file for how arrays are indexed).
    static func number(at path: String, in summary: [String: Any]) throws -> Double {
        var node: Any = summary
        for key in path.split(separator: ".").map(String.init) {
            if let object = node as? [String: Any], let next = object[key] {
                node = next
            } else if let array = node as? [[String: Any]],
                      let next = array.first(where: { "\($0["name"] ?? "")" == key || "\($0["epoch"] ?? "")" == key }) {
                node = next
            } else if let array = node as? [Any], let i = Int(key), array.indices.contains(i), !(array.first is [String: Any]) {
                node = array[i]
            } else {
                throw QuotationError("\(summaryPath) has no \(path) (stopped at \"\(key)\")")
            }
        }
        guard let value = (node as? NSNumber)?.doubleValue else { throw QuotationError("\(summaryPath): \(path) is not a number") }
        return value
    }

    static func formatted(_ x: Double, _ format: String) throws -> String {
        switch format {
        case "pct2": return String(format: "%.2f%%", 100 * x)
        case "pct2bare": return String(format: "%.2f", 100 * x)
        case "f2": return String(format: "%.2f", x)
        case "f3": return String(format: "%.3f", x)
        case "f4": return String(format: "%.4f", x)
        case "int":
            let digits = String(Int(x.rounded()))
            var out = ""
            for (i, c) in digits.reversed().enumerated() { if i > 0 && i % 3 == 0 { out.append(",") }; out.append(c) }
            return String(out.reversed())
        default: throw QuotationError("unknown format \"\(format)\" (pct2, pct2bare, f2, f3, f4, int)")
        }
    }
}
