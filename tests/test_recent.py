from vae_core.recent import Recent


def test_recent_makes_each_value_once_and_forgets_the_least_recently_used():
    made = []
    cache = Recent(2)
    make = lambda k: (lambda: made.append(k) or k * 10)  # noqa: E731
    assert cache.get(1, make(1)) == 10 and cache.get(2, make(2)) == 20 and cache.get(1, make(1)) == 10
    assert made == [1, 2]
    cache.get(3, make(3))  # 2 is now the least recently used: it goes
    assert cache.get(1, make(1)) == 10 and cache.get(2, make(2)) == 20
    assert made == [1, 2, 3, 2]
