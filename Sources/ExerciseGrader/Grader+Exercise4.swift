// Exercise 4 — remove the balancing loss and measure the collapse
// (Notebooks/exercises.md, §4; the MNIST version is part3-mnist.md, §4).
//
// A behaviour exercise: the checks look at numbers a run produced, not at a
// derivative. What is checked, in order:
//   1. measureLoad on hand-made loads whose shares, CV, largest share and idle
//      count are worked out in the comments below;
//   2. the unbalanced model has no balancing loss, the balanced one the Switch
//      loss with α = task.auxWeight;
//   3. both models learned the task (test accuracy at least 85%);
//   4. each run's statistics cover the whole test set, and its measurement is
//      measureLoad of those statistics (recomputed here);
//      (the two checks below judge the grader's own measurement of the
//      statistics, so a wrong measureLoad does not hide the behaviour)
//   5. without balancing the load collapses: CV ≥ 0.5;
//   6. with the Switch loss it stays even: CV ≤ 0.35.
// The thresholds: over 12 seeds of the task the reference measured CV 0.75–1.09
// without balancing and 0.04–0.17 with it (CollapseTask.swift); 0.5 and 0.35
// leave room on both sides and cannot both be met by a run that ignores
// `balanced`.
import Foundation
import MoE

extension Grader {
    /// Shares, CV (population standard deviation over the mean 1/E), largest
    /// share and idle experts of a load: the definitions of LoadMeasurement.
    static func loadFormula(_ counts: [Int]) -> LoadMeasurement {
        let e = counts.count, total = counts.reduce(0, +)
        guard e > 0, total > 0 else {
            return LoadMeasurement(shares: counts.map { _ in 0 }, coefficientOfVariation: 0, largestShare: 0, idleExperts: e)
        }
        let shares = counts.map { Double($0) / Double(total) }
        let mean = 1 / Double(e)
        let variance = shares.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(e)
        return LoadMeasurement(shares: shares, coefficientOfVariation: variance.squareRoot() / mean,
                               largestShare: shares.max()!, idleExperts: shares.filter { $0 < LoadMeasurement.idleShare }.count)
    }

    /// What is wrong with `got` as the measurement of `counts`, or nil.
    static func measurementProblem(_ got: LoadMeasurement, counts: [Int]) -> String? {
        let want = loadFormula(counts)
        let e = counts.count
        let load = "for token counts \(counts)"
        if got.shares.count != e { return "\(load) you returned \(got.shares.count) shares; one per expert (\(e))" }
        if let i = (0..<e).first(where: { !(abs(got.shares[$0] - want.shares[$0]) <= 1e-9) }) {
            return "\(load) share \(i) is \(fmt(got.shares[i])), expected \(fmt(want.shares[i])) — a share is " +
                "count / total count" + (want.shares.allSatisfy { $0 == 0 } ? " (0 when nothing was routed, not 0/0)" : "")
        }
        let cv = got.coefficientOfVariation, right = want.coefficientOfVariation
        if !(abs(cv - right) <= 1e-9 + 1e-9 * right) {
            var text = "\(load) the CV is \(fmt(cv)), expected \(fmt(right))"
            if cv.isNaN { text += " — NaN: with nothing routed the CV is 0, not 0/0" }
            else if e > 1, abs(cv - right * (Double(e) / Double(e - 1)).squareRoot()) < 1e-9 {
                text += " — you divided the variance by E − 1 (the sample variance); use the population variance, ÷E"
            } else if abs(cv - right / Double(e)) < 1e-9 {
                text += " — that is the standard deviation; divide it by the mean share, 1/E"
            } else if abs(cv - right * right) < 1e-9 {
                text += " — that is CV²; take the square root"
            }
            return text
        }
        if abs(got.largestShare - want.largestShare) > 1e-9 {
            return "\(load) the largest share is \(fmt(got.largestShare)), expected \(fmt(want.largestShare))"
        }
        if got.idleExperts != want.idleExperts {
            return "\(load) you count \(got.idleExperts) idle experts, expected \(want.idleExperts) " +
                "(idle: a share below LoadMeasurement.idleShare = 1%)"
        }
        return nil
    }

    static func gradeCollapse(_ s: ExerciseSubmission, _ list: Checklist) {
        list.check("measureLoad on hand-made loads") {
            // [25, 25, 25, 25]: even, CV 0.          [100, 0, 0, 0]: one expert, CV √3 = 1.7321, 3 idle.
            // [50, 30, 20, 0]: deviations ±0.25, ±0.05 from 1/4, variance 0.0325, CV 0.7211, 1 idle.
            // [995, 5]: shares 0.995 and 0.005 (idle), CV 0.99.   [0, 0, 0]: nothing routed, CV 0.
            for counts in [[25, 25, 25, 25], [100, 0, 0, 0], [50, 30, 20, 0], [995, 5], [0, 0, 0]] {
                if let problem = measurementProblem(s.measureLoad(tokenCounts: counts), counts: counts) { return problem }
            }
            return nil
        }

        let task = CollapseTask.standard()
        let unbalanced = s.runCollapseExperiment(balanced: false, task: task)
        let balanced = s.runCollapseExperiment(balanced: true, task: task)
        let runs = [("without balancing", unbalanced), ("with the Switch loss", balanced)]

        list.check("the unbalanced model has no balancing loss; the balanced one the Switch loss, α = \(task.auxWeight)") {
            if let b = unbalanced.model.moe.balancing.first(where: { $0.weight != 0 }) {
                return "the model of runCollapseExperiment(balanced: false) still has a balancing term " +
                    "\"\(b.name)\" with weight \(b.weight); remove it (balancing: [])"
            }
            let terms = balanced.model.moe.balancing
            if !terms.contains(where: { $0.name == "switch" && $0.weight == task.auxWeight }) {
                return "the model of runCollapseExperiment(balanced: true) has balancing terms " +
                    "\(terms.map { "\($0.name) (\($0.weight))" }); it needs SwitchBalancing(weight: task.auxWeight)"
            }
            return nil
        }

        let accuracies = runs.map { Trainer.accuracy(of: $0.1.model, on: task.test) }
        list.check("both models learned the task: test accuracy " +
                   accuracies.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " and ") + " (needs ≥ 85%)") {
            for ((what, _), accuracy) in zip(runs, accuracies) {
                if !(accuracy >= 0.85) {
                    return "the model \(what) classifies \(String(format: "%.1f", 100 * accuracy))% of the test points; did the training " +
                        "loop run task.training.epochs epochs over task.train (Trainer.trainEpoch)?"
                }
            }
            return nil
        }

        let routed = list.check("each run routed the whole test set after training") {
            for (what, run) in runs {
                let st = run.statistics
                if st.tokens != task.test.count {
                    return "the statistics \(what) cover \(st.tokens) tokens; route the whole test set " +
                        "(\(task.test.count) points) after training, e.g. Trainer.routingReport(of:on:)"
                }
                if st.tokenCounts.count != task.experts {
                    return "the statistics \(what) have \(st.tokenCounts.count) experts, the task \(task.experts)"
                }
            }
            return nil
        }
        list.check("each run's measurement is measureLoad of its statistics") {
            guard routed else { return "no statistics to measure yet (see above)" }
            for (what, run) in runs {
                if let problem = measurementProblem(run.measurement, counts: run.statistics.tokenCounts) {
                    return "the measurement \(what) is not measureLoad(tokenCounts: statistics.tokenCounts): " + problem
                }
            }
            return nil
        }

        let behaviour = ["without balancing the load collapses (CV ≥ 0.5)", "with the Switch loss the load stays even (CV ≤ 0.35)"]
        guard routed else { return list.skip(behaviour, because: "there is no routing to judge yet") }
        let collapsed = loadFormula(unbalanced.statistics.tokenCounts)
        let even = loadFormula(balanced.statistics.tokenCounts)
        func summary(_ m: LoadMeasurement) -> String {
            "CV \(String(format: "%.3f", m.coefficientOfVariation)), largest share " +
                "\(String(format: "%.1f%%", 100 * m.largestShare)), \(m.idleExperts) idle"
        }
        list.check("without balancing the load collapses: \(summary(collapsed)) (needs CV ≥ 0.5)") {
            collapsed.coefficientOfVariation >= 0.5 ? nil :
                "the load stayed fairly even without a balancing loss (CV \(fmt(collapsed.coefficientOfVariation))); " +
                "on this task the reference collapses to CV 0.75–1.09. Is the balancing really gone, and is the " +
                "model trained with task.training and routed with TopKGating(experts: task.experts, k: task.k)?"
        }
        list.check("with the Switch loss the load stays even: \(summary(even)) (needs CV ≤ 0.35)") {
            even.coefficientOfVariation <= 0.35 ? nil :
                "the load is uneven although the Switch loss is on (CV \(fmt(even.coefficientOfVariation))); " +
                "is its weight task.auxWeight, and does the model train with it?"
        }
    }
}
