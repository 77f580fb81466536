#!/usr/bin/env bash
# The coupon brief's two acceptance attacks, against a running allot:
#   1. 50 users claim a coupon with 5 units at once: exactly 5 succeed, remaining 0;
#   2. one user claims another coupon 10 times at once: 1 succeeds, 9 get 409.
# Usage: scripts/flash-sale-attack.sh [BASE_URL]   (default http://127.0.0.1:8080)
set -euo pipefail
base=${1:-http://127.0.0.1:8080}
run=$(date +%s%N)
json=(-H 'content-type: application/json')

curl -sf -o /dev/null "$base/healthz" || { echo "allot is not answering at $base" >&2; exit 1; }

create() { # name amount
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' "${json[@]}" -X POST "$base/api/coupons" \
        -d "{\"name\":\"$1\",\"amount\":$2}")
    [ "$status" = 201 ] || { echo "creating $1 answered $status" >&2; exit 1; }
}

# Prints one HTTP status per claim; all claims start together.
claims() { # coupon, then user ids
    local coupon=$1; shift
    printf '%s\n' "$@" | xargs -P "$#" -I{} curl -s -o /dev/null -w '%{http_code}\n' "${json[@]}" \
        -X POST "$base/api/coupons/claim" -d "{\"user_id\":\"{}\",\"coupon_name\":\"$coupon\"}"
}

count() { grep -c "^$1\$" || true; }

fail=0
check() { # what, expected, actual
    if [ "$2" = "$3" ]; then echo "ok    $1: $3"; else echo "FAIL  $1: expected $2, got $3"; fail=1; fi
}

coupon="ATTACK_A_$run"
create "$coupon" 5
results=$(claims "$coupon" $(seq -f 'user_%g' 1 50))
check "50 users for 5 units: 200s" 5 "$(count 200 <<<"$results")"
check "50 users for 5 units: 409s" 45 "$(count 409 <<<"$results")"
shown=$(curl -s "$base/api/coupons/$coupon")
check "remaining_amount" 0 "$(sed -E 's/.*"remaining_amount":([0-9]+).*/\1/' <<<"$shown")"
check "claimed_by entries" 5 "$(grep -o 'user_[0-9]*' <<<"$shown" | sort -u | wc -l | tr -d ' ')"

coupon="ATTACK_B_$run"
create "$coupon" 100
results=$(claims "$coupon" $(for _ in $(seq 10); do echo same_user; done))
check "one user x10: 200s" 1 "$(count 200 <<<"$results")"
check "one user x10: 409s" 9 "$(count 409 <<<"$results")"

exit $fail
