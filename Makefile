# tern build. `make` builds everything into $(BUILD); `make test` runs the suite
# (plain build, then once more under ASan+UBSan) and ends with "N passed, M failed".
CC      ?= gcc
BUILD   ?= build
SAN     ?=
BSSL_INC = /usr/include/android
BSSL_LIB = /usr/lib/x86_64-linux-gnu/android

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wvla \
           -Wno-format-truncation -fno-strict-aliasing -I. -I$(BSSL_INC) -MMD -MP
# (reasons and log lines are bounded on purpose: truncation is the intent)
LDFLAGS += -L$(BSSL_LIB) -Wl,-rpath,$(BSSL_LIB)
LDLIBS  += -luring -lhiredis -lssl -lcrypto -lpthread -lcrypt -lcares

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

LIB_SRC   := $(filter-out engine/main.c,$(wildcard engine/*.c queue/*.c tls/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
SINK_SRC  := $(wildcard bench/sink*.c)
SINK_OBJ  := $(SINK_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC  := $(wildcard tests/unit_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/tern $(BUILD)/tern-sink $(BUILD)/tern-loadgen $(BUILD)/tern-bench-inject \
     $(BUILD)/tern-crypto-cost $(BUILD)/tern-byte-cost $(BUILD)/tern-body-cost $(BUILD)/tern-resp-cost $(BUILD)/tern-redis-cost $(UNIT_BIN) \
     $(BUILD)/tests/queue_cluster_probe

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libtern.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/tern: $(BUILD)/engine/main.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-sink: $(SINK_OBJ) $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Benchmark tools (bench/README.md): the direct SMTP load generator, the
# paced, multi-recipient injector, and what the key exchange and a large
# body's steps cost.
$(BUILD)/tern-loadgen: $(BUILD)/bench/loadgen.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-bench-inject: $(BUILD)/bench/inject.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-crypto-cost: $(BUILD)/bench/crypto_cost.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-byte-cost: $(BUILD)/bench/byte_cost.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-body-cost: $(BUILD)/bench/body_cost.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-resp-cost: $(BUILD)/bench/resp_cost.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tern-redis-cost: $(BUILD)/bench/redis_cost.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests, and tests/queue_cluster_probe.c (run by it_queue_cluster.sh
# against the cluster it starts: not a unit_* binary, which run.sh runs bare).
$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/libtern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# libFuzzer targets need clang; built on demand by the test runner. The
# library is compiled once, with the fuzzer's coverage instrumentation
# (fuzzer-no-link), and each target links against it: compiling it into
# every target made the fuzz build ten times the work (4m44s of the suite's
# time, serially, on the 2-core machine).
FUZZ_SRC    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN    := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_OBJ    := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_CFLAGS := -std=c17 -D_GNU_SOURCE -O1 -g -I. -I$(BSSL_INC)
fuzz: $(FUZZ_BIN)
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@
$(BUILD)/fuzz/libtern.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_BIN): $(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/fuzz/libtern.a
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(BUILD)/fuzz/libtern.a $(LDFLAGS) $(LDLIBS)

test: all
	@tests/run.sh

# Everything a demo needs: build, private redis, sink with STARTTLS, inject, drain, summary.
demo: all
	@scripts/demo.sh

# The TLS delivery benchmark: `make bench` (bulk), or e.g. `make bench BENCH="tail --runs 3"`.
BENCH ?= bulk
bench: all
	@bench/run $(BENCH)

clean:
	rm -rf build

.PHONY: all test demo clean fuzz bench
-include $(FUZZ_OBJ:.o=.d) $(LIB_OBJ:.o=.d) $(SINK_OBJ:.o=.d) $(BUILD)/bench/loadgen.d $(BUILD)/bench/inject.d $(BUILD)/bench/crypto_cost.d $(BUILD)/bench/byte_cost.d $(BUILD)/bench/body_cost.d $(BUILD)/bench/resp_cost.d $(BUILD)/bench/redis_cost.d $(UNIT_BIN:=.d) $(BUILD)/tests/queue_cluster_probe.d $(BUILD)/engine/main.d
