print("benchmarks land with the plugin issues")
