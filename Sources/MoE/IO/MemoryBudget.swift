// MemoryBudget: how much memory a run may plan to use, checked before the
// model or data set is allocated.
//
// Every size flag has a generous range (--hidden up to 65,536, --experts up to
// 1,024, gpt-moe's --width up to 8,192), because each is reasonable alone. Some
// combinations are not: `--experts 1024 --expert-hidden 65536` asks for 34
// billion weights. Allocating them fails deep inside the standard library with
// "failed to allocate" and a crash, after minutes of work. Instead, the
// programs add up what a run will hold (weights, gradients, Adam's two moments
// and any copies, the activations of one batch, the data) before building
// anything, and refuse in one line that says how much and why.
//
// The budget is half of the memory the machine has: ProcessInfo.physicalMemory,
// or a container's cgroup limit when that is smaller. Half, because the
// estimate is a floor (allocator overhead and temporaries are not counted),
// and the machine runs other things. The walkthrough's runs need a few hundred
// megabytes at most; a run the check refuses could not have finished anyway.
import Foundation

public enum MemoryBudget {
    /// The memory this machine has, in bytes: physical memory, or the cgroup limit when smaller.
    public static var machineBytes: Double {
        var bytes = Double(ProcessInfo.processInfo.physicalMemory)
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let limit = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0 {
                bytes = min(bytes, limit)
            }
        }
        return bytes
    }

    /// What a run may plan to use: half of `machineBytes`.
    public static var bytes: Double { machineBytes / 2 }

    /// Bytes as people read them: "512 MB", "1.4 TB" (powers of 1000).
    public static func format(_ bytes: Double) -> String {
        let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB"]
        var value = bytes, unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return unit == 0 ? "\(Int(value)) bytes" : String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }

    /// A count as people read it: "51.5 billion", "733 thousand".
    public static func formatCount(_ n: Double) -> String {
        if n >= 1e9 { return String(format: "%.1f billion", n / 1e9) }
        if n >= 1e6 { return String(format: "%.1f million", n / 1e6) }
        if n >= 1e3 { return String(format: "%.0f thousand", n / 1e3) }
        return String(format: "%.0f", n)
    }

    /// Throws when `estimate` bytes exceed the budget. Sizes are Doubles so that
    /// no product of flags can overflow while it is being checked.
    /// - Parameters:
    ///   - what: the thing that needs the memory, e.g. "this model".
    ///   - breakdown: how the estimate was made, e.g. "51.5 billion parameters × 28 bytes".
    ///   - advice: what to change, e.g. "use a smaller --width or --layers".
    public static func check(_ estimate: Double, what: String, breakdown: String, advice: String) throws {
        let budget = bytes
        guard estimate <= budget else {
            throw MemoryBudgetError(description: "\(what) needs about \(format(estimate)) (\(breakdown)), more than the "
                                    + "memory budget of \(format(budget)) (half of this machine's \(format(machineBytes))); \(advice)")
        }
    }
}

/// A run that cannot fit in memory, as one line.
public struct MemoryBudgetError: Error, CustomStringConvertible {
    public let description: String
}
