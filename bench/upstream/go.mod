module aig.local/bench/upstream

go 1.22
