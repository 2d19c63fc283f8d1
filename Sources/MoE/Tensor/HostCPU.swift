// HostCPU: what the processor this process runs on can do, where a kernel's
// best shape depends on it.
//
// The package compiles its compute code for the host CPU (`-target-cpu native`
// on x86-64, Package.swift), so the instructions and registers the compiler
// used are the host's. One kernel choice depends on them: the matmul's 8-row
// register tile needs AVX-512's 32 vector registers (Matmul.swift, `wideTile`;
// Notebooks/part2-implementation.md, §19).
#if canImport(Darwin)
import Darwin
#endif
import Foundation

public enum HostCPU {
    /// True on an x86-64 CPU with AVX-512 Foundation (`avx512f`): read from
    /// /proc/cpuinfo on Linux and from `sysctl hw.optional.avx512f` on macOS.
    /// False on arm64, and where neither can be read.
    public static let hasAVX512: Bool = {
        #if arch(x86_64)
        #if os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        return flags.split(separator: " ").contains("avx512f")
        #elseif canImport(Darwin)
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        return sysctlbyname("hw.optional.avx512f", &value, &size, nil, 0) == 0 && value != 0
        #else
        return false
        #endif
        #else
        return false
        #endif
    }()
}
