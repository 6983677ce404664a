module bustedtest

go 1.19
