// mnist-moe --seeds: the same run under several seeds, and what the spread says.
//
//     swift run mnist-moe --seeds 0-4
//
// One seed is one draw: the initial weights, the gate noise and the data order
// all come from it, and single runs of this 5,000-image setup differ by about
// a point of test accuracy. Part 3 reports one run per model, so the fair
// comparison is its number against our mean ± standard deviation, with the
// range beside them. Notebooks/part3-mnist.md, §5 reads such a run.
import Foundation
import MoE

struct SeedSpreadReport {
    let options: Options
    let seeds: [(seed: UInt64, runs: [ModelRun])]

    static let plotNames = ["test_accuracy_by_seed.svg"]

    /// Mean, sample standard deviation (n − 1), minimum and maximum.
    struct Spread {
        let values: [Double]
        var mean: Double { values.reduce(0, +) / Double(max(values.count, 1)) }
        var std: Double {
            guard values.count > 1 else { return 0 }
            let m = mean
            return (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)).squareRoot()
        }
        var text: String {
            values.isEmpty ? "-" : String(format: "%.2f ± %.2f%% (%.2f–%.2f)", 100 * mean, 100 * std,
                                          100 * (values.min() ?? 0), 100 * (values.max() ?? 0))
        }
        var lossText: String {
            values.isEmpty ? "-" : String(format: "%.4f ± %.4f", mean, std)
        }
    }

    func runs(named name: String) -> [ModelRun] { seeds.compactMap { $0.runs.first { $0.model.name == name } } }

    func spread(_ name: String, _ value: (ModelRun) -> Double) -> Spread { Spread(values: runs(named: name).map(value)) }

    /// A late spike: after epoch 10, the running training accuracy of an epoch
    /// falls at least one point below the epoch before (a loss spike that the
    /// next epochs repair). Counted per run.
    static func lateSpikes(_ run: ModelRun) -> [Int] {
        let h = run.trainer.history
        return h.indices.dropFirst().filter { h[$0].epoch > 10 && h[$0 - 1].trainAccuracy - h[$0].trainAccuracy >= 0.01 }
            .map { h[$0].epoch }
    }

    func tables() -> String {
        let walkthrough = RunReport(options: options, runs: []).isWalkthroughSetup
        var table = TextTable(headers: ["Metric (\(seeds.count) seeds)", "MoE", "Dense MLP"]
                              + (walkthrough ? ["walkthrough MoE", "walkthrough dense"] : []))
        func row(_ name: String, _ moe: Spread, _ dense: Spread, _ wm: String, _ wd: String, loss: Bool = false) {
            table.addRow([name, loss ? moe.lossText : moe.text, loss ? dense.lossText : dense.text]
                         + (walkthrough ? [wm, wd] : []))
        }
        typealias W = RunReport.Walkthrough
        let test: (ModelRun) -> Double = { $0.testAccuracy }
        let train: (ModelRun) -> Double = { $0.trainer.history.last?.trainAccuracy ?? .nan }
        row("Test accuracy", spread("moe", test), spread("dense", test), RunReport.pct(W.moeTest), RunReport.pct(W.denseTest))
        row("Final training accuracy", spread("moe", train), spread("dense", train),
            RunReport.pct(W.moeTrain), RunReport.pct(W.denseTrain))
        for point in W.curve where point.epoch < options.epochs {
            let at: (ModelRun) -> Double = { r in r.trainer.history.first { $0.epoch == point.epoch }?.trainAccuracy ?? .nan }
            row("Training accuracy, epoch \(point.epoch)", spread("moe", at), spread("dense", at),
                RunReport.pct(point.moe), RunReport.pct(point.dense))
        }
        let loss: (ModelRun) -> Double = { r in
            let last = r.trainer.history.last
            let alpha = Double((r.model as? MoEClassifier)?.moe.auxLossWeight ?? 0)
            return (last?.trainLoss ?? .nan) + (r.model is MoEClassifier ? alpha * (last?.auxLoss ?? .nan) : 0)
        }
        row("Final training loss (CE + α·aux)", spread("moe", loss), spread("dense", loss),
            String(format: "%.4f", W.moeLoss), String(format: "%.4f", W.denseLoss), loss: true)
        var text = "\nAcross seeds (mean ± standard deviation, range in brackets)\n" + table.render() + "\n"
        for name in ["moe", "dense"] {
            let spiky = runs(named: name).filter { !Self.lateSpikes($0).isEmpty }.count
            let total = runs(named: name).count
            if total > 0 {
                text += "\(name): \(spiky) of \(total) runs had a late spike (after epoch 10, training accuracy "
                    + "one point or more below the epoch before)\n"
            }
        }
        return text
    }

    func summary() -> [String: Any] {
        func entry(_ name: String) -> [String: Any] {
            let list = runs(named: name)
            let test = Spread(values: list.map(\.testAccuracy))
            let train = Spread(values: list.map { $0.trainer.history.last?.trainAccuracy ?? .nan })
            return ["test_accuracy": ["mean": test.mean, "std": test.std, "values": test.values],
                    "final_train_accuracy": ["mean": train.mean, "std": train.std, "values": train.values],
                    "late_spike_epochs": list.map(Self.lateSpikes)]
        }
        var models: [String: Any] = [:]
        for name in ["moe", "dense"] where !runs(named: name).isEmpty { models[name] = entry(name) }
        return ["config": options.json, "seeds": seeds.map(\.seed), "models": models,
                "walkthrough": ["moe_test": RunReport.Walkthrough.moeTest, "dense_test": RunReport.Walkthrough.denseTest],
                "machine": RunReport.machine]
    }

    func write(to directory: URL) throws {
        try RunReport.writeSummary(summary(), to: directory)
        var series: [(name: String, points: [(x: Double, y: Double)])] = []
        let xs = seeds.map { Double($0.seed) }
        for (name, label) in [("moe", "MoE"), ("dense", "dense")] where !runs(named: name).isEmpty {
            series.append(("\(label) test", zip(xs, runs(named: name)).map { ($0, 100 * $1.testAccuracy) }))
        }
        if RunReport(options: options, runs: []).isWalkthroughSetup, let lo = xs.min(), let hi = xs.max() {
            series.append(("walkthrough MoE", [(lo, 100 * RunReport.Walkthrough.moeTest), (hi, 100 * RunReport.Walkthrough.moeTest)]))
            series.append(("walkthrough dense", [(lo, 100 * RunReport.Walkthrough.denseTest), (hi, 100 * RunReport.Walkthrough.denseTest)]))
        }
        let chart = LineChart(title: "Test accuracy by seed", xLabel: "seed", yLabel: "test accuracy (%)", series: series)
        try AtomicFile.write(Data(chart.svg().utf8), to: directory.appendingPathComponent("test_accuracy_by_seed.svg"))
    }
}
